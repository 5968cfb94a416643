/**
 * A queue thread's part of the NVMe in-flight log (under --isolate): the
 * log lies in the connection's journal memfd, which this thread maps
 * itself (as it maps guest memory), so that taking and posting log there
 * without a message to the main thread (see inflight-log.ts).
 */
import { native, type MapHandle } from '../../native/index.js';
import { inflightLogOver } from '../crash-points.js';
import { InflightLog } from '../inflight-log.js';
import type { ThreadLogPlace } from './messages.js';

const PAGE = 4096;

export class LogMapping {
  private map: [ArrayBuffer, MapHandle] | undefined;
  log: InflightLog | undefined;

  /** Maps this thread's part of the log at `place`, replacing the mapping it had; a fresh part is forgotten. */
  attach(place: ThreadLogPlace): InflightLog {
    this.detach();
    const { size } = InflightLog.layout(place.queues, place.entries);
    const start = Math.floor(place.offset / PAGE) * PAGE;
    const m = native.mmap(place.fd, start, place.offset - start + size, true);
    if (typeof m === 'number') throw new Error(`nvme queue thread: cannot map the in-flight log: errno ${-m}`);
    this.map = m;
    const log = inflightLogOver(new Uint8Array(m[0], place.offset - start, size), place.queues, place.entries, place.part, place.parts);
    if (place.fresh) log.clearPart();
    this.log = log;
    return log;
  }

  detach(): void {
    this.log = undefined;
    if (this.map) native.munmap(this.map[1], this.map[0]);
    this.map = undefined;
  }
}
