/**
 * The NVMe controller's own cost per command, in process: a controller
 * on a RAM disk, the test suite's NVMe driver (test/helpers) to set it up,
 * then batches of 32 random 4 KiB reads on one 256-entry queue, each batch
 * rung by calling the doorbell register directly (no socket, no wake-up),
 * its completions reaped from the CQ. Prints ns per command (driver side
 * included), the fastest and the median of 7 runs of 96k commands. Pin it
 * (`taskset -c 1`) and run it alternately against another build to compare.
 *
 * `--floor` runs the same driver against Node's own floor for this loop
 * instead of the controller: the least JavaScript that does a command's
 * work (read the SQE's fields through a DataView, copy 4 KiB from a
 * Uint8Array disk into the guest buffer, write the CQE), with no checks,
 * no logging and no abstraction.
 *
 * Usage: node dist/bench/nvme-controller.js [--plain] [--floor]   (default: shadow doorbells, the controller)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nvmeController, nvmeControllerOf, serve } from '../src/index.js';
import { filledDisk, nsPerItem } from './in-process.js';
import { connectClient } from '../test/helpers/raw.js';
import { GUEST_BASE, NvmeDriver } from '../test/helpers/nvme-driver.js';

const QD = 32;
const ENTRIES = 256;
const DISK = 64 << 20;
const BATCHES = 3000;

const shadow = !process.argv.includes('--plain');
const floor = process.argv.includes('--floor');
const dir = mkdtempSync(join(tmpdir(), 'muser-nvme-ctl-'));
const { backend: disk, plain: floorDisk } = filledDisk(DISK);
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
// Node's floor: the same disk bytes in a plain array, the guest's memory as one view.
const guest = d.bytes(GUEST_BASE, d.mem.bytes.length);
let floorHead = 0;
let floorTail = 0;
let floorPhase = 1;
/** The floor's controller: every command from its head to `newTail`, read from the disk, completed in the CQ. */
function floorDoorbell(newTail: number): void {
  while (floorHead !== newTail) {
    const at = floorHead * 64;
    const cid = sq.getUint16(at + 2, true);
    const prp1 = sq.getUint32(at + 24, true);
    const slba = sq.getUint32(at + 40, true);
    const from = slba * 512;
    guest.set(floorDisk.subarray(from, from + 4096), prp1 - GUEST_BASE);
    floorHead = (floorHead + 1) % ENTRIES;
    const c = floorTail * 16;
    cq.setUint32(c, 0, true);
    cq.setUint32(c + 8, floorHead | (1 << 16), true);
    cq.setUint32(c + 12, cid | (floorPhase << 16), true);
    floorTail = (floorTail + 1) % ENTRIES;
    if (floorTail === 0) floorPhase ^= 1;
  }
}
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
  if (floor) floorDoorbell(tail);
  else controller.writeRegister(0x1000 + 8, word(tail));
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
  if (!floor) controller.writeRegister(0x1000 + 12, word(head));
}

try {
  const ns = nsPerItem(batch, BATCHES, QD);
  console.log(JSON.stringify({ shadow, floor, ns_per_command_min: ns.min, ns_per_command_median: ns.median }));
} finally {
  d.close();
  client.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
}
