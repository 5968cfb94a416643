/**
 * A seeded fuzz of a virtio-blk device's ring memory (queue 0): scribbled
 * descriptors, indirect tables and avail entries, kicked by every kind of
 * doorbell; the driver resets and starts again whenever the device sets
 * DEVICE_NEEDS_RESET. Returns how many times it did. Leaves the device
 * started afresh (one queue).
 */
import { VirtioStatus, DescFlag } from '../../src/virtio/index.js';
import { T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES } from './virtio-blk-driver.js';
import type { VirtioDriver } from './virtio-driver.js';

export async function fuzzRing(d: VirtioDriver, rounds: number, seed = 0x9e3779b9): Promise<number> {
  let x = seed;
  const rnd = (n: number): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
  const pool = d.alloc(64 * 1024, 4096);
  const base = d.mark();
  /** An address: mostly inside guest memory, sometimes anywhere. */
  const addr = (): number | bigint => (rnd(8) === 0 ? BigInt(rnd(0xffffffff)) << BigInt(rnd(33)) : pool + rnd(64 * 1024));
  let broken = 0;
  // Config interrupts counted at the last (re)start: a device that sets
  // DEVICE_NEEDS_RESET raises one after it, maybe a round later than the
  // kick that broke the ring (a queue on a worker thread reports it so).
  let baseline = d.vectors[0].total;
  for (let round = 0; round < rounds; round++) {
    const q = d.queues.get(0)!;
    // Scribble over some descriptors, an indirect table, avail slots.
    for (let i = 0; i < 8; i++) {
      const flags = rnd(8) & (DescFlag.NEXT | DescFlag.WRITE | DescFlag.INDIRECT);
      d.writeDesc(q.desc, rnd(q.size), { addr: flags & DescFlag.INDIRECT && rnd(2) ? pool : addr(), len: rnd(4) === 0 ? rnd(0xffffffff) : rnd(9000), flags, next: rnd(4) === 0 ? rnd(0xffff) : rnd(q.size) });
    }
    const table = d.bytes(pool, 512);
    for (let i = 0; i < 16; i++) table[rnd(512)] = rnd(256);
    // A valid request header at the pool start keeps some requests reaching the blk code.
    const header = Buffer.alloc(16);
    header.writeUInt32LE([T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES, 77][rnd(7)]);
    header.writeBigUInt64LE(BigInt(rnd(4096)), 8);
    d.bytes(pool + 4096, 16).set(header);
    const posts = 1 + rnd(4);
    for (let i = 0; i < posts; i++) d.publish(0, rnd(8) === 0 ? rnd(0xffff) : rnd(q.size));
    if (rnd(16) === 0) d.setAvailIdx(0, rnd(0xffff));
    await d.kick(0, (['message', 'posted', 'eventfd'] as const)[rnd(3)]);
    // The server answers, whatever happened to the ring.
    const status = await d.status();
    if (status & VirtioStatus.DEVICE_NEEDS_RESET || rnd(10) === 0) {
      if (status & VirtioStatus.DEVICE_NEEDS_RESET) {
        broken++;
        await d.vectors[0].waitFor(baseline + 1);
      }
      d.rewind(base);
      await d.start(1);
      baseline = d.vectors[0].total;
    } else {
      d.takeUsed(0);
    }
  }
  d.rewind(base);
  await d.start(1);
  return broken;
}
