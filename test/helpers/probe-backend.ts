/**
 * A real block backend (src/block) with what device tests need to watch and
 * steer it: call counts, the unmap flags write-zeroes saw, reads, writes and
 * flushes held until the test lets them go (to force completion order),
 * injected failures, capabilities turned off, and direct access to the
 * storage below that bypasses all of these. It offers the synchronous
 * variants (readNow, writeNow, flushNow) as the RAM disk below does, except
 * while holding or when `offerNow` is off; `served` says which way each
 * read, write and flush went.
 */
import { BlockError, ramBackend, type BlockBackend, type BlockCapabilities } from '../../src/block/index.js';

export class ProbeBackend implements BlockBackend {
  readonly capabilities: BlockCapabilities;
  calls = { read: 0, write: 0, flush: 0, discard: 0, writeZeroes: 0 };
  /** Unmap flags seen by writeZeroes. */
  unmaps: boolean[] = [];
  /** When set, reads, writes and flushes wait until released (by `releaseAll` or one at a time). */
  holding = false;
  /** Fail the next read, write or flush with this code. */
  failNext: BlockError['code'] | undefined;
  /** Offer readNow / writeNow / flushNow (default true). */
  offerNow = true;
  /** Reads, writes and flushes served at once (by the synchronous variants) and asynchronously. */
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
  poke(bytes: Uint8Array, offset: number): Promise<void> {
    return this.inner.write(offset, [bytes]);
  }

  /** Fills [start, end) (default the whole disk) with `value`, past the probes. */
  fill(value: number, start = 0, end = this.size): Promise<void> {
    return this.poke(Buffer.alloc(end - start, value), start);
  }

  async read(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    this.calls.read++;
    this.served.async++;
    await this.gate();
    return this.inner.read(offset, buffers);
  }

  async write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): Promise<void> {
    this.calls.write++;
    this.served.async++;
    await this.gate();
    return this.inner.write(offset, buffers, options);
  }

  async flush(): Promise<void> {
    this.calls.flush++;
    this.served.async++;
    await this.gate();
    return this.inner.flush();
  }

  readNow(offset: number, buffers: readonly Uint8Array[]): boolean {
    if (!this.offerNow || this.holding || !this.inner.readNow) return false;
    this.calls.read++;
    this.served.now++;
    this.failNow();
    return this.inner.readNow(offset, buffers);
  }

  writeNow(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): boolean {
    if (!this.offerNow || this.holding || !this.inner.writeNow) return false;
    this.calls.write++;
    this.served.now++;
    this.failNow();
    return this.inner.writeNow(offset, buffers, options);
  }

  flushNow(): boolean {
    if (!this.offerNow || this.holding || !this.inner.flushNow) return false;
    this.calls.flush++;
    this.served.now++;
    this.failNow();
    return this.inner.flushNow();
  }

  discard(offset: number, length: number): Promise<void> {
    this.calls.discard++;
    return this.inner.discard(offset, length);
  }

  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void> {
    this.calls.writeZeroes++;
    this.unmaps.push(options?.unmap ?? false);
    return this.inner.writeZeroes(offset, length, options);
  }

  close(): Promise<void> {
    this.releaseAll();
    return this.inner.close();
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
