/**
 * A minimal RAM BlockBackend for virtio-blk tests (the real ones live in
 * src/block/). It counts calls, can hold requests until the test lets them
 * go (to complete them out of order), and fails on demand.
 */
import { BlockError, type BlockBackend, type BlockCapabilities } from '../../src/block/backend.js';

export class TestRamBackend implements BlockBackend {
  readonly data: Buffer;
  readonly capabilities: BlockCapabilities;
  calls = { read: 0, write: 0, flush: 0, discard: 0, writeZeroes: 0 };
  /** Unmap flags seen by writeZeroes. */
  unmaps: boolean[] = [];
  /** When set, reads and writes wait here until released (by `releaseAll` or one at a time). */
  holding = false;
  /** Fail the next request with this code. */
  failNext: BlockError['code'] | undefined;
  private held: (() => void)[] = [];
  private heldWaiters: (() => void)[] = [];

  constructor(
    readonly size: number,
    readonly readOnly = false,
    caps: Partial<BlockCapabilities> = {},
  ) {
    this.data = Buffer.alloc(size);
    this.capabilities = { flush: true, discard: true, writeZeroes: true, ...caps };
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

  async read(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    this.calls.read++;
    await this.gate();
    let at = offset;
    for (const b of buffers) {
      this.check(at, b.length);
      b.set(this.data.subarray(at, at + b.length));
      at += b.length;
    }
  }

  async write(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    this.calls.write++;
    await this.gate();
    if (this.readOnly) throw new BlockError('EROFS', 'read-only');
    let at = offset;
    for (const b of buffers) {
      this.check(at, b.length);
      this.data.set(b, at);
      at += b.length;
    }
  }

  async flush(): Promise<void> {
    this.calls.flush++;
    await this.gate();
  }

  async discard(offset: number, length: number): Promise<void> {
    this.calls.discard++;
    this.check(offset, length);
    this.data.fill(0, offset, offset + length);
  }

  async writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void> {
    this.calls.writeZeroes++;
    this.unmaps.push(options?.unmap ?? false);
    this.check(offset, length);
    this.data.fill(0, offset, offset + length);
  }

  async close(): Promise<void> {
    this.releaseAll();
  }

  private async gate(): Promise<void> {
    const code = this.failNext;
    if (code) {
      this.failNext = undefined;
      throw new BlockError(code, 'injected failure');
    }
    if (this.holding) {
      await new Promise<void>((r) => {
        this.held.push(r);
        for (const w of this.heldWaiters.splice(0)) w();
      });
    } else {
      await new Promise((r) => setImmediate(r));
    }
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || offset + length > this.size) throw new BlockError('ERANGE', `${offset}+${length} beyond ${this.size}`);
  }
}
