/**
 * `npm run bench:dma`: what memory that may shrink costs. A client maps two
 * memfds of the same size into an in-process server: one sealed with
 * F_SEAL_SHRINK (mapped, zero-copy) and one unsealed (never mapped: a
 * truncate would SIGBUS the process, so the device reaches it with
 * pread/pwrite through the fd). The device copies out with `dma.read()`
 * and in with `dma.write()` at several sizes, alternating the two kinds.
 * Prints one line per size: median MB/s and ns per call for each, and the
 * ratio. A measurement, not a test.
 *
 * Environment: BENCH_DMA_MS (time per measurement, default 200).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../src/client/client.js';
import { sharedMemory } from '../src/client/guest-memory.js';
import { native } from '../src/native/index.js';
import { Server } from '../src/server/server.js';
import { median } from './proc.js';

const SIZE = 64 << 20;
const SEALED = 0x1_0000_0000;
const LOOSE = 0x2_0000_0000;
const SIZES = [64, 4096, 64 << 10, 1 << 20];
const ROUNDS = 5;
const MS = Math.max(20, Number(process.env.BENCH_DMA_MS ?? 200));

/** Calls per second of `op` over about MS milliseconds (sequential awaits). */
async function rate(op: (i: number) => Promise<unknown>): Promise<number> {
  let n = 0;
  const start = process.hrtime.bigint();
  const until = start + BigInt(MS) * 1_000_000n;
  let now = start;
  while (now < until) {
    for (let k = 0; k < 64; k++) await op(n++);
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'muser-bench-dma-'));
  const server = new Server({ identity: { vendorId: 0x1af4, deviceId: 0x10fe, classCode: 0xff0000 } }, join(dir, 'dma.sock'), { log: 'warn' });
  const sealed = sharedMemory(SIZE, 'bench-sealed');
  const loose = native.memfd('bench-loose', SIZE);
  let client: Client | undefined;
  try {
    for (let i = 0; i < SIZE; i += 4096) sealed.bytes[i] = 1;
    const page = Buffer.alloc(4096, 1);
    for (let i = 0; i < SIZE; i += 4096) native.pwrite(loose, page, i);
    client = await Client.connect(server.path);
    await client.setBusMaster();
    await client.dmaMap(SEALED, sealed);
    await client.dmaMapRaw(LOOSE, SIZE, 3, 0, loose);
    const dma = server.device.dma;
    if (!dma.isDirect(SEALED, SIZE) || dma.isDirect(LOOSE, SIZE)) throw new Error('expected a mapped and an unmapped region');
    console.log(`DMA copies: sealed memfd (zero-copy mapping) vs unsealed memfd (pread/pwrite), ${ROUNDS} rounds of ${MS} ms, median`);
    console.log('op     size     sealed MB/s  ns/call   unsealed MB/s  ns/call   unsealed/sealed');
    for (const op of ['read', 'write'] as const) {
      for (const size of SIZES) {
        const slots = SIZE / size;
        const data = Buffer.alloc(size, 7);
        const run = (base: number) => (i: number) =>
          op === 'read' ? dma.read(base + (i % slots) * size, size) : dma.write(base + (i % slots) * size, data);
        const a: number[] = [];
        const b: number[] = [];
        for (let r = 0; r < ROUNDS; r++) {
          a.push(await rate(run(SEALED)));
          b.push(await rate(run(LOOSE)));
        }
        const ra = median(a);
        const rb = median(b);
        const mb = (r: number): string => ((r * size) / 1e6).toFixed(0).padStart(11);
        const ns = (r: number): string => (1e9 / r).toFixed(0).padStart(8);
        console.log(`${op.padEnd(6)} ${String(size).padStart(8)} ${mb(ra)}  ${ns(ra)}   ${mb(rb).padStart(13)}  ${ns(rb)}   ${(rb / ra).toFixed(2).padStart(8)}`);
      }
    }
  } finally {
    client?.close();
    sealed.close();
    native.close(loose);
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
