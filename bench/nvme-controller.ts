/**
 * The NVMe controller's own cost per command, in process: a controller
 * on a RAM disk, the test suite's NVMe driver (test/helpers) to set it up,
 * then batches of 32 random 4 KiB reads on one 256-entry queue, each batch
 * rung by calling the doorbell register directly (no socket, no wake-up),
 * its completions reaped from the CQ. Prints ns per command (driver side
 * included), the fastest and the median of 7 runs of 96k commands. Pin it
 * (`taskset -c 1`) and run it alternately against another build to compare.
 *
 * Usage: node dist/bench/nvme-controller.js [--plain]   (default: shadow doorbells)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nvmeController, nvmeControllerOf, ramBackend, serve } from '../src/index.js';
import { connectClient } from '../test/helpers/raw.js';
import { NvmeDriver } from '../test/helpers/nvme-driver.js';

const QD = 32;
const ENTRIES = 256;
const DISK = 64 << 20;
const BATCHES = 3000;

const shadow = !process.argv.includes('--plain');
const dir = mkdtempSync(join(tmpdir(), 'muser-nvme-ctl-'));
const disk = ramBackend(DISK);
// Written whole first, as the bench's warm-up does: reads then copy (a disk never written would zero-fill).
for (let at = 0; at < DISK; at += 1 << 20) disk.write(at, [new Uint8Array(1 << 20).fill(at >> 20)]);
const spec = nvmeController({ namespaces: [disk], queues: 2 });
const server = serve(spec, join(dir, 'nvme.sock'), { log: 'silent' });
const client = await connectClient(server.path);
const d = await NvmeDriver.open(client, { memory: 'shared' });
await d.enable();
await d.createIoQueues(1, ENTRIES);
if (shadow) await d.configureShadowDoorbells();
const controller = nvmeControllerOf(spec)!;
const q = d.queues.get(1)!;
const bufs = Array.from({ length: QD }, () => d.alloc(4096));
const sq = d.view(q.sq, ENTRIES * 64);
const cq = d.view(q.cq, ENTRIES * 16);
const db = d.dbbuf && d.view(d.dbbuf.dbs, 16);
const word = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
let rng = 12345;
let tail = 0;
let head = 0;
let phase = 1;

function batch(): void {
  for (let i = 0; i < QD; i++) {
    rng = (rng * 1103515245 + 12345) >>> 0;
    const at = tail * 64;
    for (let k = 0; k < 64; k += 4) sq.setUint32(at + k, 0, true);
    sq.setUint8(at, 0x02);
    sq.setUint16(at + 2, i, true);
    sq.setUint32(at + 4, 1, true);
    sq.setUint32(at + 24, bufs[i], true);
    sq.setUint32(at + 40, (rng % (DISK / 4096)) * 8, true);
    sq.setUint32(at + 48, 7, true);
    tail = (tail + 1) % ENTRIES;
  }
  db?.setUint32(8, tail, true);
  controller.writeRegister(0x1000 + 8, word(tail));
  let n = 0;
  for (;;) {
    const status = cq.getUint16(head * 16 + 14, true);
    if ((status & 1) !== phase) break;
    if (status >> 1) throw new Error(`status 0x${(status >> 1).toString(16)}`);
    n++;
    head = (head + 1) % ENTRIES;
    if (head === 0) phase ^= 1;
  }
  if (n !== QD) throw new Error(`reaped ${n} of ${QD}`);
  db?.setUint32(12, head, true);
  controller.writeRegister(0x1000 + 12, word(head));
}

try {
  for (let i = 0; i < BATCHES; i++) batch(); // warm-up: JIT, the disk's pages
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < BATCHES; i++) batch();
    runs.push(Number(process.hrtime.bigint() - t0) / (BATCHES * QD));
  }
  runs.sort((a, b) => a - b);
  console.log(JSON.stringify({ shadow, ns_per_command_min: Math.round(runs[0]), ns_per_command_median: Math.round(runs[3]) }));
} finally {
  d.close();
  client.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
}
