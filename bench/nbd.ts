/**
 * `npm run bench:nbd`: IOPS of the NBD backend at queue depth 32, beside
 * the local-file backend on the same image, and beside an anchor measured
 * the same way: `qemu-img bench` (QEMU's own NBD client) against the same
 * nbdkit export. Every run issues COUNT requests of 4 KiB at consecutive
 * offsets wrapping around a 64 MiB image, QD 32 requests in flight (what
 * `qemu-img bench -d 32 -s 4096` does), reads then writes. Prints IOPS and
 * ratios. A measurement, not a test; needs nbdkit and qemu-img.
 *
 * Environment: BENCH_NBD_COUNT (requests per run, default 100000).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFileBackend, openNbdBackend, type BlockBackend } from '../src/index.js';

const IMAGE_SIZE = 64 << 20;
const BLOCK = 4096;
const DEPTH = 32;
const COUNT = Math.max(1000, Number(process.env.BENCH_NBD_COUNT ?? 100_000));

/** Requests per second: DEPTH workers, each taking the next offset in turn. */
async function ours(disk: BlockBackend, write: boolean): Promise<number> {
  let next = 0;
  const buffers = Array.from({ length: DEPTH }, () => Buffer.alloc(BLOCK, 0x5a));
  const t0 = process.hrtime.bigint();
  await Promise.all(
    buffers.map(async (buf) => {
      for (;;) {
        const i = next++;
        if (i >= COUNT) return;
        const offset = (i * BLOCK) % IMAGE_SIZE;
        if (write) await disk.write(offset, [buf]);
        else await disk.read(offset, [buf]);
      }
    }),
  );
  return COUNT / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/** The same run by `qemu-img bench`; it prints "Run completed in N seconds". */
function qemuImg(target: string, format: string, write: boolean): number | undefined {
  const args = ['bench', '-f', format, '-c', String(COUNT), '-d', String(DEPTH), '-s', String(BLOCK), '-t', 'none', ...(write ? ['-w'] : []), target];
  const p = spawnSync('qemu-img', args, { encoding: 'utf8' });
  const m = /Run completed in ([\d.]+) seconds/.exec(p.stdout ?? '');
  if (p.status !== 0 || !m) {
    console.error(`qemu-img ${args.join(' ')}: ${p.stderr || p.stdout}`);
    return undefined;
  }
  return COUNT / Number(m[1]);
}

async function startNbdkit(image: string, sock: string): Promise<ChildProcess> {
  const child = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', sock, 'file', image], { stdio: 'ignore' });
  for (let i = 0; i < 250; i++) {
    const up = await new Promise<boolean>((res) => {
      const s = connect({ path: sock });
      s.once('connect', () => (s.destroy(), res(true)));
      s.once('error', () => res(false));
    });
    if (up) return child;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('nbdkit did not start');
}

const fmt = (v: number | undefined) => (v === undefined ? '     n/a' : v.toFixed(0).padStart(8));
const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? 'n/a' : (a / b).toFixed(2));

async function main(): Promise<void> {
  for (const bin of ['nbdkit', 'qemu-img']) {
    if (spawnSync(bin, ['--version'], { stdio: 'ignore' }).status !== 0) {
      console.error(`${bin} is not installed (apt-get install nbdkit qemu-utils)`);
      process.exit(1);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'muser-bench-nbd-'));
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(IMAGE_SIZE, 1)); // allocated: no holes to favour anyone
  truncateSync(image, IMAGE_SIZE);
  const sock = join(dir, 'nbd.sock');
  const server = await startNbdkit(image, sock);
  const uri = `nbd+unix:///?socket=${sock}`;
  try {
    console.log(`4 KiB requests, queue depth ${DEPTH}, ${COUNT} per run, 64 MiB image (page-cached), nbdkit file plugin on a UNIX socket`);
    console.log(`${'op'.padEnd(6)} ${'file'.padStart(8)} ${'nbd'.padStart(8)} ${'anchor'.padStart(8)}   nbd/file  nbd/anchor   (IOPS; anchor = qemu-img bench on the same export)`);
    for (const write of [false, true]) {
      const file = await openFileBackend(image);
      const fileIops = await ours(file, write);
      await file.close();
      const nbd = await openNbdBackend(uri);
      const nbdIops = await ours(nbd, write);
      await nbd.close();
      const anchor = qemuImg(uri, 'raw', write);
      console.log(`${(write ? 'write' : 'read').padEnd(6)} ${fmt(fileIops)} ${fmt(nbdIops)} ${fmt(anchor)}   ${ratio(nbdIops, fileIops).padStart(8)}  ${ratio(nbdIops, anchor).padStart(10)}`);
    }
  } finally {
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
