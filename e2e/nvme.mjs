// @ts-check
/**
 * e2e/nvme.mjs - the NVMe scenario of issue 12: the guest's stock `nvme`
 * driver binds the muser NVMe sample (`muser run nvme SOCK --image IMG`)
 * through QEMU's vfio-user-pci, and the virtio-blk disk flow runs on
 * /dev/nvme0n1 (e2e/guest/blk-*.sh with BLK_DEV=nvme0n1). `qemu-nvme` runs
 * the same flow against QEMU's built-in NVMe controller, to prove the guest
 * side on its own.
 *
 * Two boots on one 64 MiB sparse image:
 *  1. nvme binds (class 010802), /dev/nvme0n1 has the image's size, the
 *     controller's model, serial and firmware revision in sysfs are the
 *     sample's; mkfs, write, sync, umount, drop caches, mount, read back;
 *     the host's e2fsck is clean and debugfs reads the same bytes;
 *  2. on 2 vCPUs: two I/O queues, every file reads back, fstrim (Dataset
 *     Management deallocate) frees the image's blocks, then a controller
 *     reset from the guest recovers and I/O goes on; e2fsck is clean.
 */
import { statSync } from 'node:fs';
import { available, bootWith, checkFirstBoot, diffSums, FILLER, fsck, IMAGE_SIZE, MiB, newImage, pick, record, sameSums, sums } from './virtio.mjs';

/**
 * @typedef {'qemu' | 'muser'} Backend
 * @typedef {import('./harness.mjs').Harness} Harness
 * @typedef {any} Run
 */

/** The NVMe scenarios, keyed by name, in the shape scenario.mjs runs. */
export function nvmeScenarios() {
  /** @type {Record<string, any>} */
  const out = {};
  for (const backend of /** @type {Backend[]} */ (['muser', 'qemu'])) {
    const pre = backend === 'qemu' ? 'qemu-' : '';
    if (backend === 'muser') {
      out['nvme-doorbells'] = {
        tests: '',
        sharedRam: true,
        check: () => {},
        what: 'NVMe doorbell messages per I/O: the same O_DIRECT load without shadow doorbells, with them, and with them polled',
        sample: 'nvme',
        flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => doorbellFlow(r, h),
      };
      out['nvme-workers'] = {
        tests: '',
        sharedRam: true,
        check: () => {},
        what: 'NVMe with its I/O queues on 2 worker threads (--workers 2): the O_DIRECT load on 2 vCPUs, every I/O command served by a thread; then the nvme flow (ext2, fstrim, controller reset) with --workers 2',
        sample: 'nvme',
        flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => workersFlow(r, h),
      };
      out['nvme-mmap-doorbells'] = {
        tests: '',
        sharedRam: true,
        check: () => {},
        what: 'NVMe with its doorbell page mapped into the guest and watched (--poll --mmap-doorbells): the O_DIRECT load with not one doorbell message',
        sample: 'nvme',
        flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => mappedDoorbellFlow(r, h),
      };
    }
    out[`${pre}nvme`] = {
      tests: '',
      sharedRam: true,
      check: () => {},
      what: `NVMe (${backend === 'qemu' ? "QEMU's own controller" : 'the muser sample'}): ext2 on /dev/nvme0n1, remount, second boot on 2 vCPUs, fstrim, controller reset`,
      sample: 'nvme',
      flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => nvmeFlow(r, h, backend),
    };
  }
  return out;
}

/** @param {Run} r @param {Harness} h @param {string[]} lines @param {string} label @param {Backend} backend @param {{ queues?: string }} want */
function checkController(r, h, lines, label, backend, want) {
  const i = record(h, pick(lines, 'E2E-BLK:'), 'info');
  r.assert(i.pcidriver === 'nvme' && i.class === '0x010802', `${label}: the stock nvme driver binds the class 010802 function (pci ${i.pci})`, JSON.stringify(i));
  r.assert(Number(i.bytes) === IMAGE_SIZE, `${label}: /dev/nvme0n1 has the image's size (${i.bytes} bytes)`, JSON.stringify(i));
  r.assert(i.serial === 'muser-e2e-nvme', `${label}: sysfs serial is the one the controller declares (${i.serial})`, JSON.stringify(i));
  if (backend === 'muser') {
    r.assert(i.model === 'muser_NVMe_controller' && i.firmware === '1.0', `${label}: sysfs model and firmware_rev match Identify (${i.model}, ${i.firmware})`, JSON.stringify(i));
    r.assert(Number(i.discard_max) > 0 && Number(i.write_zeroes_max) > 0, `${label}: the namespace offers discard (DSM) and write zeroes`, JSON.stringify(i));
  }
  if (want.queues) r.assert(i.queues === want.queues, `${label}: blk-mq gives /dev/nvme0n1 ${want.queues} I/O queues`, JSON.stringify(i));
}

/** @param {Run} r @param {Harness} h @param {Backend} backend @param {string[]} [extra] the sample's extra options */
async function nvmeFlow(r, h, backend, extra = []) {
  if (!(await available(r, backend, 'nvme'))) return;
  const image = newImage(r);

  const b1 = await bootWith(r, h, backend, { kind: 'nvme', image, extra }, { tests: 'nvme-format', label: 'boot1' });
  checkController(r, h, b1, 'boot1', backend, {});
  const written = checkFirstBoot(r, h, b1, image, { on: '/dev/nvme0n1' });
  const before = statSync(image).blocks;

  const b2 = await bootWith(r, h, backend, { kind: 'nvme', image, extra }, { tests: 'nvme-verify', label: 'boot2', smp: 2 });
  checkController(r, h, b2, 'boot2', backend, { queues: '2' });
  r.assert(sameSums(written, sums(h, b2, 'boot2')), 'boot2: after a second boot on the same image, every file reads back intact', diffSums(written, sums(h, b2, 'boot2')));
  const trim = pick(b2, 'E2E-BLK:').find((l) => l.startsWith('fstrim ')) ?? 'no fstrim line';
  const after = statSync(image).blocks;
  r.assert(after <= before - (FILLER * 2) / 3 / 512,
    `fstrim reaches Dataset Management: the image file's allocated blocks go ${before} -> ${after} (the guest deleted ${FILLER / MiB} MiB; ${trim})`, trim);
  const reset = h.kv(pick(b2, 'E2E-BLK:').find((l) => l.startsWith('reset ')) ?? '');
  r.assert(reset.state === 'live' && /^[0-9a-f]{64}$/.test(reset.written ?? '') && reset.written === reset.readback,
    'boot2: after echo 1 > /sys/class/nvme/nvme0/reset_controller the controller is live again, and a file written after the reset reads back intact after dropped caches',
    JSON.stringify(reset));
  fsck(r, image, 'after fstrim and the controller reset (boot 2)');
}

/**
 * The same load three times on one image: without shadow doorbells (every
 * SQ tail and CQ head is a REGION_WRITE message), with them (Linux writes the
 * shadow buffer and rings only when EventIdx asks), and with them plus
 * polling (the device keeps reading an idle queue's shadow tail for 20 ms,
 * EventIdx set so that Linux does not ring meanwhile). The device counts its
 * doorbell messages and I/O commands (`--stats` prints them when QEMU leaves).
 * @param {Run} r @param {Harness} h
 */
async function doorbellFlow(r, h) {
  if (!(await available(r, 'muser', 'nvme'))) return;
  const image = newImage(r);
  /** @type {Record<string, number>} */
  const perIo = {};
  /** @type {Record<string, string[]>} */
  const modes = { 'no-shadow': ['--no-shadow-doorbells'], shadow: [], 'shadow-poll': ['--poll-us', '20000'] };
  for (const [mode, extra] of Object.entries(modes)) {
    const from = r.device.length;
    const lines = await bootWith(r, h, 'muser', { kind: 'nvme', image, extra: ['--stats', ...extra] }, { tests: 'nvme-io', label: mode });
    const io = h.kv(pick(lines, 'E2E-BLK:').find((l) => l.startsWith('io ')) ?? '');
    r.assert(/^[0-9a-f]{64}$/.test(io.written ?? '') && io.written === io.qd1 && io.written === io.qd4,
      `${mode}: 4 MiB written with O_DIRECT reads back intact at queue depth 1 and 4 (QD1 4 KiB reads under TCG: ${io.qd1_read_iops} IOPS)`, JSON.stringify(io));
    const stats = h.kv((r.device.slice(from).find((/** @type {string} */ l) => l.startsWith('nvme: stats ')) ?? '').slice('nvme: '.length));
    const ios = Number(stats.io_commands);
    const msgs = Number(stats.io_doorbell_writes);
    perIo[mode] = msgs / ios;
    r.assert(ios >= 3072, `${mode}: the device served ${ios} I/O commands with ${msgs} I/O doorbell messages: ${(msgs / ios).toFixed(3)} per I/O (${stats.shadow_reads} shadow doorbell reads)`, JSON.stringify(stats));
  }
  r.assert(perIo.shadow < perIo['no-shadow'] * 0.75, `shadow doorbells cut doorbell messages per I/O from ${perIo['no-shadow'].toFixed(2)} to ${perIo.shadow.toFixed(2)}`, JSON.stringify(perIo));
  r.assert(perIo['shadow-poll'] < perIo.shadow, `polling the shadow doorbells for 20 ms after each burst cuts them further, to ${perIo['shadow-poll'].toFixed(3)} per I/O`, JSON.stringify(perIo));
}

/**
 * The same O_DIRECT load with the doorbell page mapped into the guest and
 * watched by the device (`--poll --mmap-doorbells`), shadow doorbells off so
 * that Linux writes every SQ tail and CQ head to the page: the data reads
 * back, and the device received no doorbell message for I/O, only stores it
 * saw in the page (`--stats`), but for the few QEMU sends while INTx is in
 * use (it unmaps the page then, to catch the EOI: the firmware's doorbells).
 * @param {Run} r @param {Harness} h
 */
async function mappedDoorbellFlow(r, h) {
  if (!(await available(r, 'muser', 'nvme'))) return;
  const image = newImage(r);
  const from = r.device.length;
  const lines = await bootWith(r, h, 'muser', { kind: 'nvme', image, extra: ['--stats', '--no-shadow-doorbells', '--poll', '--mmap-doorbells'] }, { tests: 'nvme-io', label: 'mmap' });
  const io = h.kv(pick(lines, 'E2E-BLK:').find((l) => l.startsWith('io ')) ?? '');
  r.assert(/^[0-9a-f]{64}$/.test(io.written ?? '') && io.written === io.qd1 && io.written === io.qd4,
    `mapped doorbells: 4 MiB written with O_DIRECT reads back intact at queue depth 1 and 4 (QD1 4 KiB reads under TCG: ${io.qd1_read_iops} IOPS)`, JSON.stringify(io));
  const stats = h.kv((r.device.slice(from).find((/** @type {string} */ l) => l.startsWith('nvme: stats ')) ?? '').slice('nvme: '.length));
  const ios = Number(stats.io_commands);
  // A few doorbells come as messages: QEMU unmaps the page while INTx is in use (to catch the EOI), as when the firmware drives the disk.
  r.assert(ios >= 3072 && Number(stats.io_doorbell_writes) <= ios / 100 && Number(stats.mapped_doorbells) >= ios,
    `mapped doorbells: the device served ${ios} I/O commands with ${stats.io_doorbell_writes} I/O doorbell messages; it saw ${stats.mapped_doorbells} doorbells stored into the page`, JSON.stringify(stats));
}

/**
 * The O_DIRECT load with the I/O queues on worker threads (`--workers 2`,
 * 2 vCPUs: two I/O queues, one per thread): QEMU's doorbell messages are
 * forwarded to the threads, which map guest RAM and signal MSI-X
 * themselves; the data reads back and the main thread ran no I/O command.
 * @param {Run} r @param {Harness} h
 */
async function workersFlow(r, h) {
  if (!(await available(r, 'muser', 'nvme'))) return;
  const image = newImage(r);
  const from = r.device.length;
  const lines = await bootWith(r, h, 'muser', { kind: 'nvme', image, extra: ['--stats', '--workers', '2'] }, { tests: 'nvme-io', label: 'workers', smp: 2 });
  const io = h.kv(pick(lines, 'E2E-BLK:').find((l) => l.startsWith('io ')) ?? '');
  r.assert(/^[0-9a-f]{64}$/.test(io.written ?? '') && io.written === io.qd1 && io.written === io.qd4,
    `workers: 4 MiB written with O_DIRECT reads back intact at queue depth 1 and 4 (QD1 4 KiB reads under TCG: ${io.qd1_read_iops} IOPS)`, JSON.stringify(io));
  const stats = h.kv((r.device.slice(from).find((/** @type {string} */ l) => l.startsWith('nvme: stats ')) ?? '').slice('nvme: '.length));
  const ios = Number(stats.io_commands);
  r.assert(ios >= 3072 && Number(stats.main_io_commands) === 0,
    `workers: the threads served ${ios} I/O commands, the main thread ${stats.main_io_commands}`, JSON.stringify(stats));
  await nvmeFlow(r, h, 'muser', ['--workers', '2']);
}
