/**
 * SpanCache: ranges inside the region last located are answered without
 * asking the DMA layer, and only with the rights that region was located
 * with; everything else goes to the DMA layer.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { emptySpan } from '../src/device/dma-access.js';
import type { GuestSpan, QueueMemory } from '../src/device/queue-memory.js';
import { SpanCache } from '../src/device/span-cache.js';
import { DmaMapFlag } from '../src/protocol/constants.js';

/** One region at 0x1000 of 4 KiB with `rights`; counts the calls that reach it. */
function memory(rights: number): QueueMemory & { calls: number } {
  const bytes = new Uint8Array(4096);
  const m = {
    calls: 0,
    locate(addr: number, length: number, write: boolean, out: GuestSpan): boolean {
      m.calls++;
      if (!(addr >= 0x1000 && addr + length <= 0x2000)) throw new Error(`EFAULT 0x${addr.toString(16)}`);
      if (write && !(rights & DmaMapFlag.WRITE)) throw new Error('EPERM');
      out.memory = bytes;
      out.offset = addr - 0x1000;
      out.start = 0x1000;
      out.rights = rights;
      return true;
    },
  };
  return m as unknown as QueueMemory & { calls: number };
}

test('a range in the region last located is answered from the cache, at its offset', () => {
  const mem = memory(DmaMapFlag.READ | DmaMapFlag.WRITE);
  const cache = new SpanCache();
  const out = emptySpan();
  assert.equal(cache.locate(mem, 0x1010, 16, false, out), true);
  assert.equal(mem.calls, 1);
  assert.equal(cache.locate(mem, 0x1800, 512, true, out), true);
  assert.equal(cache.locate(mem, 0x1fff, 1, false, out), true);
  assert.equal(mem.calls, 1, 'no further calls');
  assert.equal(out.offset, 0xfff);
  assert.equal(out.start, 0x1000);
});

test('a write where the region was located without the write right goes to the DMA layer (and is refused there)', () => {
  const mem = memory(DmaMapFlag.READ);
  const cache = new SpanCache();
  const out = emptySpan();
  cache.locate(mem, 0x1000, 16, false, out);
  assert.throws(() => cache.locate(mem, 0x1200, 1, true, out), /EPERM/);
  assert.equal(mem.calls, 2);
});

test('ranges past the region, empty or not numbers, and anything after clear(), go to the DMA layer', () => {
  const mem = memory(DmaMapFlag.READ | DmaMapFlag.WRITE);
  const cache = new SpanCache();
  const out = emptySpan();
  cache.locate(mem, 0x1000, 16, false, out);
  assert.throws(() => cache.locate(mem, 0x1ff0, 32, false, out), /EFAULT/, 'straddles the end');
  cache.locate(mem, 0x1000, 0, false, out);
  assert.throws(() => cache.locate(mem, NaN, 4, false, out), /EFAULT/);
  assert.equal(mem.calls, 4);
  cache.clear();
  cache.locate(mem, 0x1000, 16, false, out);
  assert.equal(mem.calls, 5);
});

test('memory whose permission can change mid-turn (a worker thread\'s flag) is asked again before each answer from the cache', () => {
  let allowed = true;
  const inner = memory(DmaMapFlag.READ | DmaMapFlag.WRITE);
  const mem = {
    ...inner,
    locate(addr: number, length: number, write: boolean, out: GuestSpan): boolean {
      if (!allowed) throw new Error('EPERM: Bus Master Enable clear');
      const ok = inner.locate(addr, length, write, out);
      out.recheck = () => allowed;
      return ok;
    },
  } as unknown as QueueMemory;
  const cache = new SpanCache();
  const out = emptySpan();
  assert.equal(cache.locate(mem, 0x1000, 16, false, out), true);
  assert.equal(cache.locate(mem, 0x1100, 16, true, out), true);
  assert.equal(inner.calls, 1, 'answered from the cache while allowed');
  allowed = false;
  assert.throws(() => cache.locate(mem, 0x1200, 16, true, out), /EPERM/, 'the flag cleared: the DMA layer refuses');
});
