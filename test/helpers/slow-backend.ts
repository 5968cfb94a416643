/**
 * A slow disk for reset and reload tests: a real block backend whose asynchronous
 * reads finish only after a delay (or when the test lets them go), and then
 * fill their buffers through the backend below, as a file read the page
 * cache does not hold or a remote server would. It offers no synchronous
 * variants, so every read takes the asynchronous path with zero-copy views
 * of guest memory. Counts in an Int32Array (shared memory when the backend
 * lives on a worker thread, a mapped file when in another process:
 * {@link mapCounts}): [STARTED] reads begun, [COMPLETED] reads that
 * wrote their buffers and settled (writes too, with `writes`).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { native } from '../../src/native/index.js';
import type { MaybePromise } from '../../src/device/spec.js';
import { open, type FileHandle } from 'node:fs/promises';
import { BlockError, type BlockBackend, type BlockCapabilities } from '../../src/block/index.js';

export const STARTED = 0;
export const COMPLETED = 1;

export interface SlowOptions {
  /** Milliseconds a read (with `writes`, a write too) waits before it runs; Infinity: until release(). */
  delayMs: number;
  /** Where to count (two Int32 slots); a fresh local array by default. */
  counts?: Int32Array<ArrayBufferLike>;
  /** Writes wait too, and are counted (by default they go straight to the backend below). */
  writes?: boolean;
  /**
   * A slot of `counts` that lets every waiting command go once it is not
   * zero: set by another thread or process (the counts in shared memory).
   */
  releaseSlot?: number;
}

export class SlowBackend implements BlockBackend {
  readonly counts: Int32Array<ArrayBufferLike>;
  /** Milliseconds each read waits (Infinity: until release()); may change between reads. */
  delayMs: number;
  private held: (() => void)[] = [];
  private readonly slowWrites: boolean;
  private readonly releaseSlot: number | undefined;

  constructor(
    readonly inner: BlockBackend,
    o: SlowOptions,
  ) {
    this.delayMs = o.delayMs;
    this.counts = o.counts ?? new Int32Array(2);
    this.slowWrites = o.writes ?? false;
    this.releaseSlot = o.releaseSlot;
  }

  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get capabilities(): BlockCapabilities {
    return this.inner.capabilities;
  }

  get started(): number {
    return Atomics.load(this.counts, STARTED);
  }
  get completed(): number {
    return Atomics.load(this.counts, COMPLETED);
  }

  /** Lets every read still waiting go (the only way for `delayMs: Infinity`). */
  release(): void {
    for (const go of this.held.splice(0)) go();
  }

  async read(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    Atomics.add(this.counts, STARTED, 1);
    try {
      await this.hold();
      await this.inner.read(offset, buffers);
    } finally {
      Atomics.add(this.counts, COMPLETED, 1);
    }
  }

  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): MaybePromise<void> {
    if (!this.slowWrites) return this.inner.write(offset, buffers, options);
    Atomics.add(this.counts, STARTED, 1);
    return this.hold()
      .then(() => this.inner.write(offset, buffers, options))
      .finally(() => Atomics.add(this.counts, COMPLETED, 1));
  }

  /** Resolves after delayMs, on release(), or once the release slot is set. */
  private hold(): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const go = (): void => {
        clearTimeout(timer);
        const at = this.held.indexOf(go);
        if (at >= 0) this.held.splice(at, 1);
        resolve();
      };
      this.held.push(go);
      if (Number.isFinite(this.delayMs)) timer = setTimeout(go, this.delayMs);
      const slot = this.releaseSlot;
      if (slot === undefined) return;
      const poll = (): void => {
        if (Atomics.load(this.counts, slot) !== 0) go();
        else if (this.held.includes(go)) setTimeout(poll, 2);
      };
      poll();
    });
  }
  flush(): MaybePromise<void> {
    return this.inner.flush();
  }
  discard(offset: number, length: number): MaybePromise<void> {
    return this.inner.discard(offset, length);
  }
  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): MaybePromise<void> {
    return this.inner.writeZeroes(offset, length, options);
  }
  close(): Promise<void> {
    this.release();
    return this.inner.close();
  }
}

/**
 * Counts every process sees: the first 4 KiB of the file `path` mapped
 * shared (the file must be that long), as Int32 slots.
 */
export function mapCounts(path: string): { counts: Int32Array; unmap(): void } {
  const fd = openSync(path, 'r+');
  const m = native.mmap(fd, 0, 4096, true);
  closeSync(fd);
  if (typeof m === 'number') throw new Error(`mmap ${path}: errno ${-m}`);
  return { counts: new Int32Array(m[0]), unmap: () => void native.munmap(m[1], m[0]) };
}

/** Makes a FIFO at `path` (for {@link PipeBackend}). */
export function mkfifo(path: string): void {
  const r = spawnSync('mkfifo', [path]);
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed: ${r.stderr}`);
}

/**
 * A disk whose reads block in the kernel, on the thread pool, until the
 * test writes bytes into a FIFO: each read is one readv() of the FIFO into
 * the read's buffers (zero-copy views of guest memory), which fills them
 * with whatever was written (offsets are ignored). The copy into the
 * buffers happens in the kernel, on a thread pool thread, whenever the
 * test writes: nothing on the JS side can call it back. Counts as
 * {@link SlowBackend} does. Only reads.
 */
export class PipeBackend implements BlockBackend {
  readonly readOnly = true;
  readonly capabilities: BlockCapabilities = { flush: false, discard: false, writeZeroes: false };

  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly counts: Int32Array<ArrayBufferLike>,
  ) {}

  /** Opens `fifo` read-write (so opening does not wait for a writer). */
  static async open(fifo: string, size: number, counts: Int32Array<ArrayBufferLike> = new Int32Array(2)): Promise<PipeBackend> {
    return new PipeBackend(await open(fifo, 'r+'), size, counts);
  }

  get started(): number {
    return Atomics.load(this.counts, STARTED);
  }
  get completed(): number {
    return Atomics.load(this.counts, COMPLETED);
  }

  async read(_offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    Atomics.add(this.counts, STARTED, 1);
    try {
      await this.fh.readv(buffers as Uint8Array[], undefined);
    } finally {
      Atomics.add(this.counts, COMPLETED, 1);
    }
  }

  write(): Promise<void> {
    return Promise.reject(new BlockError('EROFS', 'a pipe disk is read-only'));
  }
  flush(): MaybePromise<void> {
    return Promise.resolve();
  }
  discard(): Promise<void> {
    return this.write();
  }
  writeZeroes(): Promise<void> {
    return this.write();
  }
  close(): Promise<void> {
    return this.fh.close();
  }
}

/** Polls `cond` every few ms until it holds; throws after `ms` naming `what`. */
export async function waitUntil(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 2));
  }
}

/** Pages (4 KiB) of `now` that differ from `before`. */
export function changedPages(before: Uint8Array, now: Uint8Array): number {
  let n = 0;
  for (let at = 0; at < before.length; at += 4096) {
    const a = before.subarray(at, at + 4096);
    const b = now.subarray(at, at + 4096);
    if (Buffer.compare(a, b) !== 0) n++;
  }
  return n;
}

/** What a reset test sets up around a {@link SlowBackend}: a server, a client and a driver over it. */
export interface SlowRig {
  server: { close(): void };
  client: { close(): void };
  driver: { close(): void };
  backend: SlowBackend;
}

/** Lets the rig's held reads go, then closes it from the driver down to the backend. */
export async function closeSlowRig(r: SlowRig): Promise<void> {
  r.backend.release();
  r.driver.close();
  r.client.close();
  r.server.close();
  await r.backend.close();
}
