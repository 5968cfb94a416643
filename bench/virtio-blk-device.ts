/**
 * virtio-blk's own cost per request, in process: the framework's virtioBlk
 * on a RAM disk, the test suite's virtio driver (test/helpers) to set it
 * up, then batches of QD random 4 KiB reads on one 256-entry queue, laid
 * out as bench/c/blkdrv lays them (one indirect descriptor per request,
 * its table holding header, data, status), each batch kicked by calling
 * the transport's kick directly (no socket, no wake-up) and its used
 * entries reaped from the used ring. The device raises its MSI-X vector
 * once per batch, a real eventfd write. Prints ns per request (driver side
 * included), the fastest and the median of 7 runs. Pin it (`taskset -c 1`)
 * and run it alternately against another build to compare.
 *
 * `--floor` runs the same driver against Node's own floor for this loop
 * instead of the device: the least JavaScript that does a request's work
 * (read the avail ring, follow the indirect descriptor to its table, read
 * the header, copy 4 KiB from a Uint8Array disk into the guest buffer,
 * write the status byte and the used entry, publish used.idx, write the
 * interrupt's eventfd), with no checks, no logging and no abstraction.
 *
 * Usage: node dist/bench/virtio-blk-device.js [--qd N] [--floor]   (default: QD 32, the device)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VirtioFeature, featureBit, serve, virtioBlk } from '../src/index.js';
import { filledDisk, nsPerItem } from './in-process.js';
import { DescFlag } from '../src/virtio/constants.js';
import { virtioTransportOf } from '../src/virtio/device.js';
import { native } from '../src/native/index.js';
import { connectClient } from '../test/helpers/raw.js';
import { GUEST_BASE, VirtioDriver } from '../test/helpers/virtio-driver.js';

const argQd = process.argv.indexOf('--qd');
const QD = argQd > 0 ? Number(process.argv[argQd + 1]) : 32;
const SIZE = 256;
const DISK = 64 << 20;
const BLOCKS = DISK / 4096;
const REQUESTS_PER_RUN = 96 * 1024;
const BATCHES = Math.ceil(REQUESTS_PER_RUN / QD);
if (!Number.isInteger(QD) || QD < 1 || QD > SIZE) throw new Error(`--qd: a whole number from 1 to ${SIZE}, got ${process.argv[argQd + 1]}`);

const floor = process.argv.includes('--floor');
const dir = mkdtempSync(join(tmpdir(), 'muser-blk-dev-'));
const { backend: disk, plain: floorDisk } = filledDisk(DISK);
const spec = virtioBlk({ backend: disk, queues: 1 });
const server = serve(spec, join(dir, 'blk.sock'), { log: 'silent' });
const client = await connectClient(server.path);
const d = await VirtioDriver.open(client, { memory: 'shared', memorySize: 8 << 20 });
// As blkdrv's plain rows: indirect descriptors, no EVENT_IDX (an interrupt per batch).
await d.start(1, (offered) => offered & ~featureBit(VirtioFeature.EVENT_IDX), SIZE);
const transport = virtioTransportOf(spec)!;
const q = d.queues.get(0)!;

// Per slot: a 16-byte header, a 4 KiB buffer, a status byte and a 3-entry indirect table.
const headers = d.alloc(16 * QD, 16);
const data = d.alloc(4096 * QD, 4096);
const status = d.alloc(QD, 8);
const tables = d.alloc(48 * QD, 16);
for (let s = 0; s < QD; s++) {
  d.writeDesc(tables, 3 * s, { addr: headers + 16 * s, len: 16, flags: DescFlag.NEXT, next: 1 });
  d.writeDesc(tables, 3 * s + 1, { addr: data + 4096 * s, len: 4096, flags: DescFlag.NEXT | DescFlag.WRITE, next: 2 });
  d.writeDesc(tables, 3 * s + 2, { addr: status + s, len: 1, flags: DescFlag.WRITE, next: 0 });
  d.writeDesc(q.desc, s, { addr: tables + 48 * s, len: 48, flags: DescFlag.INDIRECT, next: 0 });
}
const guest = d.mem.bytes;
const words = new DataView(guest.buffer, guest.byteOffset, guest.byteLength);
const off = (addr: number): number => addr - GUEST_BASE;
const availAt = off(q.avail);
const usedAt = off(q.used);
const irqFd = d.vectors[1].fd;

// Node's floor: the same disk bytes in a plain array, walking the rings in the driver's own view.
let floorLastAvail = 0;
let floorUsed = 0;
/** The floor's device: every chain from its last avail to avail.idx, read from the disk, published used. */
function floorKick(): void {
  const idx = words.getUint16(availAt + 2, true);
  while (floorLastAvail !== idx) {
    const head = words.getUint16(availAt + 4 + 2 * (floorLastAvail % SIZE), true);
    const table = off(words.getUint32(off(q.desc) + 16 * head, true));
    const header = off(words.getUint32(table, true));
    const buffer = off(words.getUint32(table + 16, true));
    const statusAt = off(words.getUint32(table + 32, true));
    const from = words.getUint32(header + 8, true) * 512;
    guest.set(floorDisk.subarray(from, from + 4096), buffer);
    guest[statusAt] = 0;
    const e = usedAt + 4 + 8 * (floorUsed % SIZE);
    words.setUint32(e, head, true);
    words.setUint32(e + 4, 4097, true);
    floorUsed = (floorUsed + 1) & 0xffff;
    floorLastAvail = (floorLastAvail + 1) & 0xffff;
  }
  words.setUint16(usedAt + 2, floorUsed, true);
  native.eventfdWrite(irqFd, 1);
}

let rng = 12345;
let nextAvail = 0;
let lastUsed = 0;

function batch(): void {
  for (let s = 0; s < QD; s++) {
    rng = (rng * 1103515245 + 12345) >>> 0;
    const h = off(headers) + 16 * s;
    words.setUint32(h, 0, true); // VIRTIO_BLK_T_IN
    words.setUint32(h + 8, (rng % BLOCKS) * 8, true);
    words.setUint32(h + 12, 0, true);
    guest[off(status) + s] = 0xff;
    words.setUint16(availAt + 4 + 2 * (nextAvail % SIZE), s, true);
    nextAvail = (nextAvail + 1) & 0xffff;
  }
  words.setUint16(availAt + 2, nextAvail, true);
  if (floor) floorKick();
  else transport.kick(0);
  let n = 0;
  const idx = words.getUint16(usedAt + 2, true);
  while (lastUsed !== idx) {
    const e = usedAt + 4 + 8 * (lastUsed % SIZE);
    const head = words.getUint32(e, true);
    if (guest[off(status) + head] !== 0) throw new Error(`request ${head}: status ${guest[off(status) + head]}`);
    lastUsed = (lastUsed + 1) & 0xffff;
    n++;
  }
  if (n !== QD) throw new Error(`reaped ${n} of ${QD}`);
}

try {
  const ns = nsPerItem(batch, BATCHES, QD);
  // The data must be the disk's: the fill byte of the MiB the last batch's first request read.
  const check = words.getUint32(off(headers) + 8, true) * 512;
  if (guest[off(data)] !== floorDisk[check]) throw new Error('slot 0 holds the wrong bytes');
  console.log(JSON.stringify({ qd: QD, floor, ns_per_request_min: ns.min, ns_per_request_median: ns.median }));
} finally {
  d.close();
  client.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
}
