/**
 * A queue thread's counters in shared memory: the thread writes them (it
 * is their only writer), the main thread adds them to the controller's
 * own whenever it reports (no message per command).
 */
import type { HealthCounters } from '../identify.js';
import type { ControllerStats } from '../types.js';

const STATS = ['doorbellWrites', 'shadowReads', 'commands', 'ioCommands', 'ioDoorbellWrites', 'mappedDoorbells', 'completions', 'interrupts', 'fastCommands', 'ioeventfdKicks', 'lostKicks'] as const satisfies readonly (keyof ControllerStats)[];
const HEALTH = ['unitsRead', 'unitsWritten', 'readCommands', 'writeCommands'] as const satisfies readonly (keyof HealthCounters)[];

/** Bytes of one thread's counters. */
export const COUNTER_BYTES = 8 * (STATS.length + HEALTH.length);

/** The thread's side: stats and health objects whose fields live in `buffer`. */
export function sharedCounters(buffer: SharedArrayBuffer): { stats: ControllerStats; health: Pick<HealthCounters, (typeof HEALTH)[number]> } {
  const words = new Float64Array(buffer);
  const view = <K extends string>(keys: readonly K[], from: number): Record<K, number> => {
    const o = {} as Record<K, number>;
    keys.forEach((k, i) =>
      Object.defineProperty(o, k, {
        enumerable: true,
        get: () => words[from + i],
        set: (v: number) => void (words[from + i] = v),
      }),
    );
    return o;
  };
  return { stats: view(STATS, 0), health: view(HEALTH, STATS.length) };
}

/** The main thread's side: adds the counters in `buffer` to `stats` and `health`. */
export function addCounters(buffer: SharedArrayBuffer, stats: ControllerStats, health: HealthCounters): void {
  const words = new Float64Array(buffer);
  STATS.forEach((k, i) => (stats[k] += words[i]));
  HEALTH.forEach((k, i) => (health[k] += words[STATS.length + i]));
}
