/**
 * The controller's in-flight log in an isolated child (inflight-log.ts):
 * opening it over the device's persistent memory for a new connection or
 * for a successor's recovery (recovery.ts), and handing each queue thread
 * (`workers`) its part of it, which the thread maps from the journal memfd.
 */
import type { PersistentMemory } from '../device/persistent.js';
import type { ControllerCore } from './core.js';
import { inflightLogOver } from './crash-points.js';
import { INFLIGHT_AREA, InflightLog } from './inflight-log.js';
import type { LogPlace } from './remote.js';

type Logging = Pick<ControllerCore, 'config' | 'remote'>;

/** The controller's log (part 0: the main thread's) in `memory`, as found there. */
export function openLog(c: Logging, memory: PersistentMemory): InflightLog {
  const queues = c.config.ioQueues + 1;
  const entries = c.config.maxQueueEntries;
  const area = memory.area(INFLIGHT_AREA, InflightLog.layout(queues, entries).size);
  return inflightLogOver(area, queues, entries, 0, 1 + (c.remote?.count ?? 0));
}

/**
 * Where the queue threads map `log` (undefined without threads); throws
 * when they cannot (persistent memory that is not in a file): the
 * controller is not served without its log.
 */
export function logPlace(c: Logging, memory: PersistentMemory, log: InflightLog): LogPlace | undefined {
  if (!c.remote) return undefined;
  const at = memory.locate?.(log.area);
  if (!at) throw new Error("nvme: the 'workers' option needs the in-flight log in memory its worker threads can map (the journal's memfd under --isolate); this persistent memory has none");
  return { fd: at.fd, offset: at.offset, queues: log.queues, entries: c.config.maxQueueEntries, parts: log.parts };
}
