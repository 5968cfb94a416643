/**
 * Messages between the main thread and a device worker thread. Everything
 * crosses as structured clones; fds are numbers of this process, and the
 * side that receives one owns it (the sender dup'd it). A thread runs one
 * role (virtio queues, doorbell handlers); role messages travel inside
 * `role` and `ask` envelopes, opaque to this layer.
 */

/** Slots of the flags shared with every thread (an Int32Array over a SharedArrayBuffer). */
export const Flag = {
  /** 1 while the device may touch guest memory (Bus Master Enable set, DMA not held). */
  ACCESSIBLE: 0,
  /** MSI-X vector v's route generation lives at ROUTE + v: a direct eventfd is valid only for the generation it came with. */
  ROUTE: 1,
} as const;

/** MSI-X vectors a device may have (the PCI limit). */
export const MAX_VECTORS = 2048;

/** What a thread starts with (its `workerData`). */
export interface ThreadStart {
  /** The role module (file URL): exports startRole(runtime, data). */
  role: string;
  /** Structured-cloneable data for the role. */
  data: unknown;
  flags: SharedArrayBuffer;
  /**
   * The group the thread maps guest memory in (unique in the process): the
   * main thread revokes those mappings before it ends the thread, so that
   * I/O the thread leaves behind never writes guest memory.
   */
  group: number;
}

export type ToThread =
  | { t: 'map'; iova: number; size: number; offset: number; prot: number; fd: number | undefined }
  | { t: 'unmap'; iova: number; size: number; id: number }
  | { t: 'logging'; pageSize: number }
  | { t: 'route'; vector: number; fd: number; gen: number }
  | { t: 'doorbell'; slot: number; fd: number; spinNs: number }
  | { t: 'doorbell-close'; slot: number }
  | { t: 'signal'; slot: number }
  | { t: 'dma-done'; id: number; data?: Uint8Array; errno?: number; message?: string }
  | { t: 'role'; m: unknown }
  | { t: 'ask'; id: number; m: unknown }
  /** Send the dirty-page reports pending, then answer. */
  | { t: 'flush'; id: number };

export type FromThread =
  | { t: 'ready' }
  | { t: 'failed'; message: string }
  | { t: 'dma-read'; id: number; iova: number; length: number }
  | { t: 'dma-write'; id: number; iova: number; data: Uint8Array }
  | { t: 'dirty'; ranges: number[] }
  | { t: 'unmapped'; id: number }
  | { t: 'role'; m: unknown }
  | { t: 'answer'; id: number; value: unknown };
