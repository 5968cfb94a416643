/**
 * A real block backend (src/block) with what device tests need to watch and
 * steer it: call counts, the unmap flags write-zeroes saw, reads, writes and
 * flushes held until the test lets them go (to force completion order),
 * injected failures, capabilities turned off, and direct access to the
 * storage below that bypasses all of these. Reads, writes and flushes
 * finish at once as the RAM disk below does, except while holding or when
 * `offerNow` is off (then they return a Promise); `served` says which way
 * each went.
 */
import { BlockError, ramBackend, type BlockBackend, type BlockCapabilities } from '../../src/block/index.js';
import type { MaybePromise } from '../../src/device/spec.js';

export class ProbeBackend implements BlockBackend {
  readonly capabilities: BlockCapabilities;
  calls = { read: 0, write: 0, flush: 0, discard: 0, writeZeroes: 0 };
  /** Unmap flags seen by writeZeroes. */
  unmaps: boolean[] = [];
  /** When set, reads, writes and flushes wait until released (by `releaseAll` or one at a time). */
  holding = false;
  /** Fail the next read, write or flush with this code. */
  failNext: BlockError['code'] | undefined;
  /** Finish reads, writes and flushes at once when not holding (default true). */
  offerNow = true;
  /** Reads, writes and flushes served at once and asynchronously. */
  served = { now: 0, async: 0 };
  private held: (() => void)[] = [];
  private heldWaiters: (() => void)[] = [];

  constructor(
    /** The storage below; closed with this backend. */
    readonly inner: BlockBackend,
    caps: Partial<BlockCapabilities> = {},
  ) {
    this.capabilities = { ...inner.capabilities, ...caps };
  }

  get size(): number {
    return this.inner.size;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  /** Requests currently held. */
  get heldCount(): number {
    return this.held.length;
  }

  /** Resolves once `n` requests are held. */
  async waitHeld(n: number): Promise<void> {
    while (this.held.length < n) await new Promise<void>((r) => this.heldWaiters.push(r));
  }

  /** Lets held request `i` (in arrival order) go. */
  release(i: number): void {
    const r = this.held[i];
    if (!r) throw new Error(`no held request ${i}`);
    this.held[i] = () => {};
    r();
  }

  releaseAll(): void {
    this.holding = false;
    const list = this.held;
    this.held = [];
    for (const r of list) r();
  }

  /** The stored bytes [start, end), read past the probes. */
  async peek(start: number, end: number): Promise<Buffer> {
    const out = Buffer.alloc(end - start);
    await this.inner.read(start, [out]);
    return out;
  }

  /** Stores `bytes` at `offset`, past the probes. */
  async poke(bytes: Uint8Array, offset: number): Promise<void> {
    await this.inner.write(offset, [bytes]);
  }

  /** Fills [start, end) (default the whole disk) with `value`, past the probes. */
  fill(value: number, start = 0, end = this.size): Promise<void> {
    return this.poke(Buffer.alloc(end - start, value), start);
  }

  read(offset: number, buffers: readonly Uint8Array[]): MaybePromise<void> {
    this.calls.read++;
    if (this.now()) return this.inner.read(offset, buffers);
    return this.gate().then(() => this.inner.read(offset, buffers));
  }

  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): MaybePromise<void> {
    this.calls.write++;
    if (this.now()) return this.inner.write(offset, buffers, options);
    return this.gate().then(() => this.inner.write(offset, buffers, options));
  }

  flush(): MaybePromise<void> {
    this.calls.flush++;
    if (this.now()) return this.inner.flush();
    return this.gate().then(() => this.inner.flush());
  }

  discard(offset: number, length: number): MaybePromise<void> {
    this.calls.discard++;
    return this.inner.discard(offset, length);
  }

  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): MaybePromise<void> {
    this.calls.writeZeroes++;
    this.unmaps.push(options?.unmap ?? false);
    return this.inner.writeZeroes(offset, length, options);
  }

  close(): Promise<void> {
    this.releaseAll();
    return this.inner.close();
  }

  /** True (having counted it, and thrown an injected failure) when a request is served at once. */
  private now(): boolean {
    if (!this.offerNow || this.holding) {
      this.served.async++;
      return false;
    }
    this.served.now++;
    this.failNow();
    return true;
  }

  private failNow(): void {
    const code = this.failNext;
    if (code) {
      this.failNext = undefined;
      throw new BlockError(code, 'injected failure');
    }
  }

  private async gate(): Promise<void> {
    this.failNow();
    if (!this.holding) return;
    await new Promise<void>((r) => {
      this.held.push(r);
      for (const w of this.heldWaiters.splice(0)) w();
    });
  }
}

/** A {@link ProbeBackend} over a fresh RAM disk of `size` bytes. */
export function probeRam(size: number, caps: Partial<BlockCapabilities> = {}): ProbeBackend {
  return new ProbeBackend(ramBackend(size), caps);
}
