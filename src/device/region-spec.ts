/**
 * What serves a region: a BAR or a device-specific region, its callbacks,
 * and the doorbells a client may bind to eventfds.
 */
import type { MemoryWatch } from './memory-watch.js';
import type { Device, MaybePromise, ReadResult } from './types.js';

/** A doorbell served by an ioeventfd: writes never reach the socket. */
export interface IoEventFdSpec {
  /** Offset of the doorbell in its region. */
  offset: number;
  /** Access width the client must use: 1, 2, 4 or 8. */
  size: 1 | 2 | 4 | 8;
  /** Only writes of this value signal the eventfd (any value when omitted). */
  datamatch?: number;
  /**
   * Called with how many writes arrived since the last call. Give this or
   * `worker`.
   */
  onSignal?(count: number, device: Device): void;
  /**
   * Serves the doorbell on a worker thread instead: the thread watches the
   * eventfd itself (a REGION_WRITE to the doorbell is forwarded to it),
   * maps guest memory itself and raises MSI-X vectors by writing their
   * eventfds directly.
   */
  worker?: DoorbellWorkerSpec;
  /**
   * Takes the doorbell's eventfd to watch elsewhere (a worker thread):
   * return a release function and the server does not watch it (onSignal
   * is not called); release runs when the connection ends, before the
   * server closes its own fd (dup it to keep it). Return undefined to
   * leave it to the server. `pollIdleMs` is the server's busy-poll window
   * (0: sleep in epoll), for the watcher to do the same.
   */
  claim?(fd: number, device: Device, pollIdleMs: number): (() => void) | undefined;
}

/**
 * Where a doorbell is served off the main thread. The module exports
 * `createDoorbellHandler(data): DoorbellHandler | Promise<DoorbellHandler>`,
 * called once per thread start.
 */
export interface DoorbellWorkerSpec {
  /** The module, as a file URL (or an absolute path). */
  module: string | URL;
  /** Structured-cloneable data for createDoorbellHandler; a function is called for each thread start. */
  data?: unknown;
  /** Doorbells with the same thread number share one worker thread (default: one thread per doorbell). */
  thread?: number;
}

/** Behaviour shared by BARs and device-specific regions. */
export interface RegionSpec {
  /** Size in bytes. For BARs, a power of two. */
  size: number;
  /**
   * Back the region with shared memory (a memfd) that the device reads
   * through `device.regionMemory(index)`. Message accesses read and write
   * it unless `read`/`write` are given. `mmap` lists the areas the client
   * may map (default: the whole region); [] makes none mappable.
   */
  memory?: boolean | { mmap?: readonly { offset: number; size: number }[] };
  /** Serves a read of `length` bytes at `offset` (already range-checked). */
  read?(offset: number, length: number, device: Device): MaybePromise<ReadResult>;
  /**
   * Serves a write (already range-checked). `data` may be a view of the
   * receive buffer (no copy is made): it stays valid until the call returns,
   * or, when it returns a Promise (any thenable), until that settles. Copy
   * what you keep longer.
   */
  write?(offset: number, data: Buffer, device: Device): MaybePromise<void>;
  /** Doorbells the client may bind to eventfds (DEVICE_GET_REGION_IO_FDS). */
  ioeventfds?: readonly IoEventFdSpec[];
  /**
   * Doorbells in memory the client maps (`memoryWatch`): muser polls the
   * watched words and calls each watch's `onWrite` with a new value. Needs
   * `memory`, with the words inside an mmap area.
   */
  watches?: readonly MemoryWatch[];
  /** Reads allowed (default true). */
  readable?: boolean;
  /** Writes allowed (default true). */
  writable?: boolean;
}

/** A Base Address Register and what serves it. */
export interface BarSpec extends RegionSpec {
  /** Memory (default) or I/O space. */
  kind?: 'memory' | 'io';
  /** 64-bit memory BAR (takes the next BAR slot too). */
  is64?: boolean;
  prefetchable?: boolean;
}

/** A device-specific region (index 9 and up). */
export interface ExtraRegionSpec extends RegionSpec {
  /** VFIO region type/subtype capability, when the region has one. */
  type?: { type: number; subtype: number };
}
