/**
 * Doorbells served on worker threads (`ioeventfds: [{ offset, size, worker }]`):
 * what the handler module exports, and the main thread's side, which
 * starts the threads, hands each its doorbells' eventfds, forwards
 * doorbell writes that come as messages, and raises the interrupts a
 * thread could not raise itself.
 *
 * @example
 * ```ts
 * // ring.ts: runs on the worker thread
 * import type { DoorbellHandler } from 'muser';
 * export function createDoorbellHandler(data: { ring: number }): DoorbellHandler {
 *   return async (count, ctx) => {
 *     const head = await ctx.dma.read(data.ring, 4);
 *     // ... serve the work the driver queued ...
 *     ctx.trigger(0);
 *   };
 * }
 * ```
 */
import type { DmaAccess } from '../dma-access.js';
import type { DoorbellWorkerSpec, IoEventFdSpec } from '../region-spec.js';
import type { Device, MaybePromise } from '../types.js';
import { DeviceThreads } from './pool.js';

/** What a doorbell handler on a worker thread may use. */
export interface DoorbellContext {
  /** Guest memory, mapped by this thread (as `device.dma` on the main thread). */
  readonly dma: DmaAccess;
  /** Raises an interrupt vector (MSI-X straight from this thread while routed; otherwise through the main thread). */
  trigger(vector: number): void;
}

/** Serves a doorbell ring: `count` writes since the last call. */
export type DoorbellHandler = (count: number, ctx: DoorbellContext) => MaybePromise<void>;

/** What a doorbell thread starts with. */
export interface DoorbellRoleData {
  doorbells: { slot: number; module: string; data: unknown }[];
}

/** Doorbell thread to main thread. */
export type FromDoorbells = { t: 'trigger'; vector: number } | { t: 'error'; slot: number; message: string };

const ROLE_URL = new URL('./doorbell-role.js', import.meta.url);

interface Bell {
  region: number;
  spec: IoEventFdSpec;
  slot: number;
  thread: number;
}

/** The doorbells of one device that run on worker threads. */
export class DoorbellThreads {
  readonly threads: DeviceThreads;
  private readonly bells: Bell[];
  private device: Device | undefined;

  /** Undefined when none of the device's doorbells runs on a thread. */
  static of(regions: readonly ({ index: number; ioeventfds: readonly IoEventFdSpec[] } | undefined)[], log: (m: string) => void): DoorbellThreads | undefined {
    const bells: Bell[] = [];
    for (const r of regions) {
      for (const spec of r?.ioeventfds ?? []) {
        if (!spec.worker) continue;
        const slot = bells.length;
        bells.push({ region: r!.index, spec, slot, thread: spec.worker.thread ?? slot });
      }
    }
    return bells.length === 0 ? undefined : new DoorbellThreads(bells, log);
  }

  private constructor(bells: Bell[], log: (m: string) => void) {
    this.bells = bells;
    const ids = [...new Set(bells.map((b) => b.thread))];
    this.threads = new DeviceThreads(
      ids.map((id) => ({
        id,
        role: ROLE_URL,
        data: (): DoorbellRoleData => ({
          doorbells: bells
            .filter((b) => b.thread === id)
            .map((b) => {
              const w: DoorbellWorkerSpec = b.spec.worker!;
              return { slot: b.slot, module: String(w.module), data: typeof w.data === 'function' ? (w.data as () => unknown)() : w.data };
            }),
        }),
      })),
      {
        onEvent: (_id, raw) => {
          const m = raw as FromDoorbells;
          if (m.t === 'trigger') {
            try {
              this.device?.trigger(m.vector);
            } catch (e) {
              log(`doorbell thread raised vector ${m.vector}: ${String(e)}`);
            }
          } else log(`doorbell handler ${m.slot} failed: ${m.message}`);
        },
        onFailure: (_id, reason) => log(reason),
      },
    );
  }

  connect(device: Device): void {
    this.device = device;
    this.threads.connect(device);
  }

  disconnect(): void {
    this.device = undefined;
    this.threads.disconnect();
  }

  close(): void {
    this.threads.close();
  }

  /** The doorbell's eventfd, watched by its thread from now on; returns the release function. */
  claim(spec: IoEventFdSpec, fd: number, pollIdleMs: number): (() => void) | undefined {
    const b = this.bells.find((x) => x.spec === spec);
    return b && this.threads.claimDoorbell(b.thread, b.slot, fd, pollIdleMs);
  }

  /**
   * A REGION_WRITE that rings a thread's doorbell (same offset and width,
   * and value when it has a datamatch) is forwarded to it; true when it was.
   */
  forward(region: number, offset: number, data: Uint8Array): boolean {
    for (const b of this.bells) {
      if (b.region !== region || b.spec.offset !== offset || b.spec.size !== data.length) continue;
      if (b.spec.datamatch !== undefined && readLe(data) !== b.spec.datamatch) continue;
      this.threads.signal(b.thread, b.slot);
      return true;
    }
    return false;
  }
}

function readLe(b: Uint8Array): number {
  let v = 0;
  for (let i = b.length - 1; i >= 0; i--) v = v * 256 + b[i];
  return v;
}
