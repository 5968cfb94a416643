/**
 * BlockDevice, the checks every disk device shares: alignment, range,
 * read-only and capability refusals never reach the backend; requests
 * complete in the order the backend finishes them; close() waits.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockDevice, BlockError, ramBackend, type BlockBackend, type BlockErrorCode } from '../src/index.js';

/** A backend whose requests finish only when the test says so. */
class GatedBackend implements BlockBackend {
  readonly size = 1 << 20;
  readonly readOnly = false;
  capabilities = { flush: true, discard: true, writeZeroes: false };
  readonly calls: string[] = [];
  private readonly gates = new Map<string, () => void>();

  private gated(name: string): Promise<void> {
    this.calls.push(name);
    return new Promise((resolve) => this.gates.set(name, resolve));
  }
  /** Finishes the pending request `name`. */
  release(name: string): void {
    const g = this.gates.get(name);
    assert.ok(g, `no pending ${name}`);
    this.gates.delete(name);
    g();
  }
  read(offset: number): Promise<void> {
    return this.gated(`read@${offset}`);
  }
  write(offset: number): Promise<void> {
    return this.gated(`write@${offset}`);
  }
  flush(): Promise<void> {
    return this.gated('flush');
  }
  discard(offset: number): Promise<void> {
    return this.gated(`discard@${offset}`);
  }
  writeZeroes(offset: number): Promise<void> {
    return this.gated(`zeroes@${offset}`);
  }
  close(): Promise<void> {
    this.calls.push('close');
    return Promise.resolve();
  }
}

const code = (c: BlockErrorCode) => (e: unknown) => e instanceof BlockError && e.code === c;
const tick = () => new Promise((r) => setImmediate(r));

test('requests complete in the order the backend finishes them, not the order they came in', async () => {
  const be = new GatedBackend();
  const dev = new BlockDevice(be);
  const done: string[] = [];
  const a = Promise.resolve(dev.write(0, [new Uint8Array(4096)])).then(() => done.push('write'));
  const b = Promise.resolve(dev.read(8192, [new Uint8Array(512)])).then(() => done.push('read'));
  const c = Promise.resolve(dev.flush()).then(() => done.push('flush'));
  await tick();
  assert.deepEqual(be.calls, ['write@0', 'read@8192', 'flush'], 'all three reached the backend at once');
  assert.equal(dev.inFlight, 3);
  be.release('flush');
  be.release('read@8192');
  await tick();
  assert.deepEqual(done, ['flush', 'read']);
  be.release('write@0');
  await Promise.all([a, b, c]);
  assert.deepEqual(done, ['flush', 'read', 'write']);
  assert.equal(dev.inFlight, 0);
});

test('misaligned, out-of-range, read-only and unsupported requests are refused before the backend', async () => {
  const be = new GatedBackend();
  const ro = new BlockDevice(be, { readOnly: true, blockSize: 4096 });
  assert.equal(ro.readOnly, true);
  await assert.rejects(async () => ro.read(512, [new Uint8Array(4096)]), code('ERANGE'));
  await assert.rejects(async () => ro.read(0, [new Uint8Array(4000)]), code('ERANGE'));
  await assert.rejects(async () => ro.read(be.size, [new Uint8Array(4096)]), code('ERANGE'));
  await assert.rejects(async () => ro.write(0, [new Uint8Array(4096)]), code('EROFS'));
  await assert.rejects(async () => ro.discard(0, 4096), code('EROFS'));
  await assert.rejects(async () => ro.writeZeroes(0, 4096), code('EROFS'));
  const rw = new BlockDevice(be);
  await assert.rejects(async () => rw.writeZeroes(0, 4096), code('ENOTSUP'));
  await assert.rejects(async () => rw.discard(-512, 512), code('ERANGE'));
  assert.deepEqual(be.calls, [], 'nothing reached the backend');
  // check() vets without running: the same refusals, synchronously.
  assert.throws(() => ro.check('read', 512, 4096), code('ERANGE'));
  assert.throws(() => ro.check('write', 0, 4096), code('EROFS'));
  assert.throws(() => rw.check('write-zeroes', 0, 4096), code('ENOTSUP'));
  assert.doesNotThrow(() => rw.check('discard', 4096, 512));
  assert.deepEqual(be.calls, [], 'check() never reaches the backend');
  assert.throws(() => new BlockDevice(be, { blockSize: 1000 }), TypeError);
  assert.throws(() => new BlockDevice(be, { blockSize: 256 }), TypeError);
  assert.throws(() => new BlockDevice(ramBackend(512 * 3), { blockSize: 1024 }), TypeError);
});

test('close() refuses new requests, waits for those in flight, then closes the backend once', async () => {
  const be = new GatedBackend();
  const dev = new BlockDevice(be);
  const w = dev.write(0, [new Uint8Array(512)]);
  const d = dev.discard(4096, 512);
  let closed = false;
  const c = dev.close().then(() => (closed = true));
  await assert.rejects(async () => dev.read(0, [new Uint8Array(512)]), code('EIO'));
  await tick();
  assert.equal(closed, false);
  be.release('write@0');
  await w;
  await tick();
  assert.equal(closed, false, 'still waiting for the discard');
  be.release('discard@4096');
  await Promise.all([d, c, dev.close()]);
  assert.deepEqual(be.calls, ['write@0', 'discard@4096', 'close']);
});

test('a BlockDevice over a RAM disk reads back what it wrote', async () => {
  const dev = new BlockDevice(ramBackend(1 << 20));
  await dev.write(4096, [new Uint8Array(512).fill(5), new Uint8Array(512).fill(6)]);
  const b = new Uint8Array(1024);
  await dev.read(4096, [b]);
  assert.ok(b.subarray(0, 512).every((v) => v === 5) && b.subarray(512).every((v) => v === 6));
  await dev.writeZeroes(4096, 512, { unmap: true });
  await dev.read(4096, [b]);
  assert.ok(b.subarray(0, 512).every((v) => v === 0) && b.subarray(512).every((v) => v === 6));
  await dev.close();
});

test('requests the backend finishes at once return at once: the same refusals before the backend, thrown; EIO once closing', async () => {
  const be = new GatedBackend();
  const ro = new BlockDevice(be, { readOnly: true, blockSize: 4096 });
  assert.throws(() => ro.read(512, [new Uint8Array(4096)]), code('ERANGE'));
  assert.throws(() => ro.read(be.size, [new Uint8Array(4096)]), code('ERANGE'));
  assert.throws(() => ro.write(0, [new Uint8Array(4096)]), code('EROFS'));
  assert.deepEqual(be.calls, [], 'nothing reached the backend');

  const dev = new BlockDevice(ramBackend(1 << 20));
  assert.equal(dev.write(4096, [new Uint8Array(512).fill(5)]), undefined, 'a RAM write needs no Promise');
  const b = new Uint8Array(512);
  assert.equal(dev.read(4096, [b]), undefined);
  assert.ok(b.every((v) => v === 5));
  assert.equal(dev.flush(), undefined);
  assert.equal(dev.inFlight, 0, 'nothing counted for requests that finished at once');
  const held = new BlockDevice(new GatedBackend());
  const w = held.write(0, [new Uint8Array(512)]);
  assert.ok(w instanceof Promise, 'a backend that waits: a Promise, counted');
  assert.equal(held.inFlight, 1);
  const closing = held.close();
  assert.throws(() => held.read(0, [new Uint8Array(512)]), code('EIO'), 'refused while close() waits');
  assert.throws(() => held.flush(), code('EIO'));
  (held.backend as GatedBackend).release('write@0');
  await Promise.all([w, closing, dev.close()]);
  assert.throws(() => dev.write(0, [new Uint8Array(512)]), code('EIO'));
});
