/**
 * What the in-process benches (nvme-controller, virtio-blk-device) share:
 * the disk both a device and its Node floor read, and the timing of a
 * batch loop.
 */
import { ramBackend, type RamBackend } from '../src/index.js';

/**
 * A RAM disk of `size` bytes, every MiB filled with its index, written
 * whole first as the bench's warm-up does (reads then copy: a disk never
 * written would zero-fill); and the same bytes as one plain array, for a
 * floor.
 */
export function filledDisk(size: number): { backend: RamBackend; plain: Uint8Array } {
  const backend = ramBackend(size);
  const plain = new Uint8Array(size);
  for (let at = 0; at < size; at += 1 << 20) {
    backend.write(at, [new Uint8Array(1 << 20).fill(at >> 20)]);
    plain.fill(at >> 20, at, at + (1 << 20));
  }
  return { backend, plain };
}

/**
 * Runs `batch` `batches` times to warm up, then 7 timed runs of as many;
 * returns ns per item (`items` per batch), the fastest run and the median.
 */
export function nsPerItem(batch: () => void, batches: number, items: number): { min: number; median: number } {
  for (let i = 0; i < batches; i++) batch(); // warm-up: JIT, the disk's pages
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batches; i++) batch();
    runs.push(Number(process.hrtime.bigint() - t0) / (batches * items));
  }
  runs.sort((a, b) => a - b);
  return { min: Math.round(runs[0]), median: Math.round(runs[3]) };
}
