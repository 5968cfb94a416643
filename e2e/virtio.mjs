// @ts-check
/**
 * e2e/virtio.mjs - the virtio scenarios of issue 8: a disk and an entropy
 * source that an unmodified Linux guest drives with its own virtio_pci,
 * virtio_blk and virtio_rng drivers.
 *
 * Each scenario exists twice, differing only in its `backend`:
 *  - 'muser': the device is a muser sample (`muser run virtio-blk SOCK
 *    --image IMG [--read-only] [--queues N]`, `muser run virtio-rng SOCK`)
 *    that QEMU reaches through vfio-user-pci;
 *  - 'qemu': the same kind of device built into QEMU (virtio-blk-pci on the
 *    same raw image, virtio-rng-pci). It proves the guest side (modules,
 *    tools, scripts, checks) on its own, so when only the muser variant
 *    fails, the fault is in the device.
 * A muser variant is skipped, with a SKIP line, while its sample does not exist.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const MiB = 1024 * 1024;
/** The disk: small, so that TCG boots stay quick. */
export const IMAGE_SIZE = 64 * MiB;
/** What the guest writes and then deletes in boot 1 (e2e/guest/blk-format.sh); fstrim must free most of it. */
export const FILLER = 24 * MiB;
/** The files of e2e/guest/blk-lib.sh (BLK_FILES). */
export const FILES = ['seq.txt', 'rand.bin', ...Array.from({ length: 8 }, (_, i) => `d/s${i + 1}`)];
const SBIN_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

/**
 * @typedef {'qemu' | 'muser'} Backend
 * @typedef {{ kind: 'blk' | 'nvme', image: string, nbd?: string, readOnly?: boolean, queues?: number, extra?: string[] } | { kind: 'rng' }} Want
 * (`nbd`: the muser disk is that NBD export, served from `image`)
 * @typedef {import('./harness.mjs').Harness} Harness
 * @typedef {any} Run
 */

/** The virtio scenarios, keyed by name, in the shape scenario.mjs runs. */
export function virtioScenarios() {
  /** @type {Record<string, any>} */
  const out = {};
  for (const backend of /** @type {Backend[]} */ (['muser', 'qemu'])) {
    const pre = backend === 'qemu' ? 'qemu-' : '';
    const by = backend === 'qemu' ? "QEMU's own device" : 'the muser sample';
    const base = { tests: '', sharedRam: true, check: () => {} };
    out[`${pre}virtio-blk`] = {
      ...base,
      what: `virtio-blk (${by}): ext2 on a 64 MiB image, remount, second boot, e2fsck, fstrim, read-only`,
      sample: 'virtio-blk',
      flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => blkFlow(r, h, backend),
    };
    out[`${pre}virtio-blk-mq`] = {
      ...base,
      what: `virtio-blk (${by}) with 2 queues on 2 vCPUs: both queues carry I/O`,
      sample: 'virtio-blk',
      flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => blkMqFlow(r, h, backend),
    };
    if (backend === 'muser') {
      out['virtio-blk-workers'] = {
        ...base,
        what: 'virtio-blk (the muser sample, --workers 2) with 2 queues on 2 vCPUs, each queue served on its own worker thread',
        sample: 'virtio-blk',
        flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => blkMqFlow(r, h, backend, ['--workers', '2', '--stats']),
      };
      out['virtio-blk-mmap-doorbells'] = {
        ...base,
        what: 'virtio-blk (the muser sample, --poll --mmap-doorbells) with 2 queues on 2 vCPUs, the notify page mapped into the guest and watched',
        sample: 'virtio-blk',
        flow: async (/** @type {Run} */ r, /** @type {Harness} */ h) => {
          await blkMqFlow(r, h, backend, ['--poll', '--mmap-doorbells']);
          // Kicks are stores into the mapped page: QEMU's trace shows no notify-area message but the few it may send while INTx is in use (it unmaps the page then).
          const kicks = r.trace.filter((/** @type {string} */ l) => /^vfio_user_region_rw +region 0 offset 0x3[0-9a-f]{3} /.test(l)).length;
          r.assert(kicks <= 10, `the guest's kicks went through the mapped notify page: ${kicks} notify-area messages in QEMU's trace`, `${kicks}`);
        },
      };
    }
    out[`${pre}virtio-rng`] = {
      ...base,
      what: `virtio-rng (${by}): the guest's hw_random uses it`,
      sample: 'virtio-rng',
      flow: (/** @type {Run} */ r, /** @type {Harness} */ h) => rngFlow(r, h, backend),
    };
  }
  return out;
}

// ------------------------------------------------------- the device, either way

/**
 * How the device reaches the guest: QEMU arguments, and for muser the
 * sample's command line (bootGuest attaches its socket as vfio-user-pci).
 * @param {Backend} backend @param {Want} w @param {string} sock
 * @returns {{ qemuArgs: string[], argv?: string[] }}
 */
function attach(backend, w, sock) {
  if (backend === 'muser') {
    if (w.kind === 'rng') return { qemuArgs: [], argv: ['run', 'virtio-rng', sock] };
    const opts = [...(w.readOnly ? ['--read-only'] : []), ...(w.queues ? ['--queues', String(w.queues)] : []), ...(w.extra ?? [])];
    const disk = w.nbd ? ['--nbd', w.nbd] : ['--image', w.image];
    if (w.kind === 'nvme') return { qemuArgs: [], argv: ['run', 'nvme', sock, ...disk, '--serial', 'muser-e2e-nvme', ...opts] };
    return { qemuArgs: [], argv: ['run', 'virtio-blk', sock, ...disk, ...opts] };
  }
  // Modern-only, as a muser virtio device is: PCI id 1af4:1040+type.
  const modern = 'disable-legacy=on,disable-modern=off';
  if (w.kind === 'rng') return { qemuArgs: ['-device', `virtio-rng-pci,${modern}`] };
  const drive = `file=${w.image},format=raw,if=none,id=disk0,discard=unmap${w.readOnly ? ',readonly=on' : ''}`;
  if (w.kind === 'nvme') return { qemuArgs: ['-drive', drive, '-device', 'nvme,drive=disk0,serial=muser-e2e-nvme'] };
  return { qemuArgs: ['-drive', drive, '-device', `virtio-blk-pci,drive=disk0,${modern},serial=muser-e2e,num-queues=${w.queues ?? 1}`] };
}

/** False (and a SKIP line) when the muser sample does not exist yet. @param {Run} r @param {Backend} backend @param {string} sample */
export async function available(r, backend, sample) {
  if (backend === 'qemu') return true;
  const { SAMPLES } = await import(join(REPO, 'dist/src/samples/index.js'));
  if (SAMPLES[sample]) return true;
  r.skip(`muser ${sample} under QEMU`, `\`muser run ${sample}\` is not a known sample on this build (known: ${Object.keys(SAMPLES).join(', ')}); qemu-${r.name} checks the guest side meanwhile`);
  return false;
}

/**
 * One boot with one device: starts the muser device if there is one, boots,
 * stops the device (so the image is closed), and asserts that the boot ran
 * its scripts cleanly. Returns the boot's serial lines.
 * @param {Run} r @param {Harness} h @param {Backend} backend @param {Want} w
 * @param {{ tests: string, label: string, smp?: number, onRequest?: (verb: string, arg: string | undefined) => boolean }} boot
 */
export async function bootWith(r, h, backend, w, boot) {
  const t0 = Date.now();
  const sock = join(r.dir, `${r.sc.sample}.sock`);
  const { qemuArgs, argv } = attach(backend, w, sock);
  /** @type {Map<string, { proc: any, sock: string }>} */
  const devs = new Map();
  const from = { serial: r.serial.length, qemu: r.qemuErrors.length, device: r.device.length };
  let code = /** @type {number | null} */ (null);
  try {
    if (argv) {
      rmSync(sock, { force: true });
      devs.set(r.sc.sample, { proc: await h.startProcess(r, `device-${boot.label}`, [h.cli, ...argv], sock, r.device), sock });
    }
    code = await h.bootGuest(r, devs, { tests: boot.tests, qemuArgs, smp: boot.smp, label: boot.label, onRequest: boot.onRequest });
  } finally {
    for (const d of devs.values()) await h.stopProcess(d.proc);
  }
  const lines = r.serial.slice(from.serial);
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  r.assert(code === 0 && lines.some((l) => l.startsWith('E2E: done')), `${boot.label}: guest booted, ran ${boot.tests} and powered off (${secs} s)`,
    `qemu exit ${code}; last serial lines:\n       ${lines.slice(-15).join('\n       ')}`);
  const failures = lines.filter((l) => / FAIL /.test(l) || /^E2E: \S+ exit=[1-9]/.test(l) || /^E2E-MOD: failed/.test(l));
  r.assert(failures.length === 0, `${boot.label}: modules load and the guest scripts report no failure`, failures.join(' | '));
  const qerr = r.qemuErrors.slice(from.qemu).filter((/** @type {string} */ l) => !/Could not enable error recovery/.test(l));
  r.assert(qerr.length === 0, `${boot.label}: QEMU reported no error`, qerr.slice(0, 10).join('\n       '));
  if (argv) {
    const derr = r.device.slice(from.device).filter((/** @type {string} */ l) => /\] (warn|error): /.test(l) || /refused/.test(l));
    r.assert(derr.length === 0, `${boot.label}: the device logged no warning, error or refused command`, derr.slice(0, 10).join('\n       '));
  }
  return lines;
}

// ------------------------------------------------------------------ virtio-blk

/** Guest lines with a prefix, prefix removed. @param {string[]} lines @param {string} prefix */
export const pick = (lines, prefix) => lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length).trim());

/** @param {Harness} h @param {string[]} lines @param {string} word */
export const record = (h, lines, word) => h.kv(lines.find((l) => l.startsWith(word + ' ')) ?? '');

/** Checks the guest's view of the disk (E2E-BLK: info). @param {Run} r @param {Harness} h @param {string[]} lines @param {string} label @param {{ ro: string, queues?: string }} want */
export function checkDisk(r, h, lines, label, want) {
  const i = record(h, pick(lines, 'E2E-BLK:'), 'info');
  r.assert(i.driver === 'virtio_blk' && i.pcidriver === 'virtio-pci' && i.pci === '0x1af4:0x1042',
    `${label}: virtio_blk binds to the guest's 1af4:1042 function through virtio-pci (/dev/vda)`, JSON.stringify(i));
  r.assert(Number(i.bytes) === IMAGE_SIZE, `${label}: /dev/vda has the image's size (${i.bytes} bytes)`, JSON.stringify(i));
  r.assert(i.ro === want.ro, `${label}: the guest sees the disk ${want.ro === '1' ? 'read-only' : 'writable'} (ro=${i.ro})`, JSON.stringify(i));
  if (want.queues) r.assert(i.queues === want.queues, `${label}: blk-mq gives /dev/vda ${want.queues} hardware queues`, JSON.stringify(i));
}

/** The E2E-SUM lines of one phase: file -> sha256. @param {Harness} h @param {string[]} lines @param {string} phase */
export function sums(h, lines, phase) {
  /** @type {Map<string, string>} */
  const m = new Map();
  for (const l of pick(lines, 'E2E-SUM:')) {
    const k = h.kv(l);
    if (k.phase === phase) m.set(k.file, k.sha256);
  }
  return m;
}

/** @param {Map<string, string>} a @param {Map<string, string>} b */
export function sameSums(a, b) {
  return a.size === FILES.length && FILES.every((f) => /^[0-9a-f]{64}$/.test(a.get(f) ?? '') && a.get(f) === b.get(f));
}

/** @param {Map<string, string>} a @param {Map<string, string>} b */
export function diffSums(a, b) {
  return FILES.filter((f) => a.get(f) !== b.get(f)).map((f) => `${f}: ${a.get(f) ?? 'none'} vs ${b.get(f) ?? 'none'}`).join('; ');
}

/** @param {Buffer | string} data */
export const sha256 = (data) => createHash('sha256').update(data).digest('hex');

/** `e2fsck -fn` of the image on the host: clean means exit 0. @param {Run} r @param {string} image @param {string} when */
export function fsck(r, image, when) {
  const p = spawnSync('e2fsck', ['-fn', image], { encoding: 'utf8', env: { ...process.env, PATH: SBIN_PATH } });
  r.assert(p.status === 0, `host: e2fsck -fn of the image is clean ${when}`, `exit ${p.status ?? p.error}: ${`${p.stdout}${p.stderr}`.trim().split('\n').slice(-8).join('\n       ')}`);
}

/** Reads a file out of the image on the host (debugfs); undefined if it cannot. @param {Run} r @param {string} image @param {string} file */
export function hostFile(r, image, file) {
  const out = join(r.dir, `host-${file.replace(/\//g, '_')}`);
  rmSync(out, { force: true });
  spawnSync('debugfs', ['-R', `dump /${file} ${out}`, image], { encoding: 'utf8', env: { ...process.env, PATH: SBIN_PATH } });
  return existsSync(out) ? readFileSync(out) : undefined;
}

/** A fresh sparse image. @param {Run} r */
export function newImage(r) {
  const image = join(r.dir, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, IMAGE_SIZE);
  return image;
}

/**
 * The host's checks after a first boot that made a filesystem and wrote
 * FILES (e2e/guest/blk-format.sh, on any disk): seq.txt has the checksum the
 * host expects, every file reads back intact after a remount, e2fsck is
 * clean, and seq.txt and rand.bin read out of the image (debugfs) match the
 * guest's checksums.
 * @param {Run} r @param {Harness} h
 * @param {string[]} lines boot 1's serial lines
 * @param {string} image the image file below the guest's disk
 * @param {{ label?: string, on?: string, fsckWhen?: string }} [o] `label`
 *   prefixes the guest's checks (default 'boot1'); `on` names the disk the
 *   filesystem is on; `fsckWhen` describes the fsck (default 'after boot 1')
 * @returns {Map<string, string>} the guest's checksums of the files it wrote
 */
export function checkFirstBoot(r, h, lines, image, o = {}) {
  const label = o.label ?? 'boot1';
  const written = sums(h, lines, 'written');
  const seq = Array.from({ length: 300000 }, (_, i) => `${i + 1}\n`).join('');
  r.assert(written.get('seq.txt') === sha256(seq), `${label}: the guest made a filesystem${o.on ? ` on ${o.on}` : ''} and wrote ${FILES.length} files; seq.txt has the checksum the host expects`,
    `seq.txt: ${written.get('seq.txt')} (want ${sha256(seq)}); ${written.size} files`);
  r.assert(sameSums(written, sums(h, lines, 'remount')), `${label}: after sync, umount, dropped caches and a new mount, every file reads back intact`, diffSums(written, sums(h, lines, 'remount')));
  fsck(r, image, o.fsckWhen ?? 'after boot 1');
  const onHost = ['seq.txt', 'rand.bin'].map((f) => [f, hostFile(r, image, f)]);
  r.assert(onHost.every(([f, d]) => d !== undefined && sha256(/** @type {Buffer} */ (d)) === written.get(/** @type {string} */ (f))),
    "host: seq.txt and rand.bin read out of the image file (debugfs) match the guest's checksums",
    onHost.map(([f, d]) => `${f}: ${d === undefined ? 'not readable' : sha256(/** @type {Buffer} */ (d))}`).join('; '));
  return written;
}

/**
 * Three boots on one image: format and write (boot 1), read back and fstrim
 * (boot 2), then the same image read-only (boot 3); the host checks the
 * image between boots.
 * @param {Run} r @param {Harness} h @param {Backend} backend
 */
async function blkFlow(r, h, backend) {
  if (!(await available(r, backend, 'virtio-blk'))) return;
  const image = newImage(r);

  // Boot 1: mkfs, write, sync; umount, drop caches, mount, read back.
  const b1 = await bootWith(r, h, backend, { kind: 'blk', image }, { tests: 'blk-format', label: 'boot1' });
  checkDisk(r, h, b1, 'boot1', { ro: '0' });
  const written = checkFirstBoot(r, h, b1, image);
  const before = statSync(image).blocks;

  // Boot 2: a second boot on the same image reads everything back; fstrim.
  const b2 = await bootWith(r, h, backend, { kind: 'blk', image }, { tests: 'blk-verify', label: 'boot2' });
  checkDisk(r, h, b2, 'boot2', { ro: '0' });
  r.assert(sameSums(written, sums(h, b2, 'boot2')), 'boot2: after a second boot on the same image, every file reads back intact', diffSums(written, sums(h, b2, 'boot2')));
  const trim = pick(b2, 'E2E-BLK:').find((l) => l.startsWith('fstrim ')) ?? 'no fstrim line';
  const after = statSync(image).blocks;
  r.assert(after <= before - (FILLER * 2) / 3 / 512,
    `fstrim frees blocks in the image file: ${before} -> ${after} allocated 512-byte blocks (the guest deleted ${FILLER / MiB} MiB; ${trim})`, trim);
  fsck(r, image, 'after fstrim (boot 2)');

  // Boot 3: read-only.
  const hashBefore = sha256(readFileSync(image));
  const b3 = await bootWith(r, h, backend, { kind: 'blk', image, readOnly: true }, { tests: 'blk-ro', label: 'boot3-ro' });
  checkDisk(r, h, b3, 'boot3-ro', { ro: '1' });
  r.assert(sameSums(written, sums(h, b3, 'ro')), 'boot3-ro: the files read back intact from the read-only disk', diffSums(written, sums(h, b3, 'ro')));
  const ro = pick(b3, 'E2E-BLK:').filter((l) => l.startsWith('ro ')).map((l) => h.kv(l)).reduce((a, b) => ({ ...a, ...b }), {});
  r.assert(['touch', 'remount', 'dd', 'discard'].every((k) => ro[k] === 'refused'),
    'boot3-ro: the guest cannot write: creating a file, remounting rw, dd O_DIRECT to /dev/vda and blkdiscard are all refused', JSON.stringify(ro));
  r.assert(sha256(readFileSync(image)) === hashBefore, 'host: the image is byte for byte unchanged by the read-only boot', '');
}

/**
 * One boot, 2 vCPUs, a disk with 2 queues: I/O from each CPU completes on
 * that CPU's queue (its MSI-X vector counts it), reads back from the other
 * CPU, and is in the image on the host.
 * @param {Run} r @param {Harness} h @param {Backend} backend @param {string[]} [extra] further `muser run` options
 */
async function blkMqFlow(r, h, backend, extra = /** @type {string[]} */ ([])) {
  if (!(await available(r, backend, 'virtio-blk'))) return;
  const image = newImage(r);
  const lines = await bootWith(r, h, backend, { kind: 'blk', image, queues: 2, extra }, { tests: 'blk-mq', smp: 2, label: 'boot' });
  checkDisk(r, h, lines, 'boot', { ro: '0', queues: '2' });
  const mq = pick(lines, 'E2E-MQ:');
  const data = readFileSync(image);
  const perCpu = [0, 1].map((c) => h.kv(mq.find((l) => l.startsWith(`cpu=${c} `)) ?? ''));
  for (const [c, k] of perCpu.entries()) {
    const inImage = sha256(data.subarray(c * 2 * MiB, c * 2 * MiB + MiB));
    r.assert(k.written !== undefined && k.written === k.readback && k.written === inImage,
      `1 MiB written with O_DIRECT from CPU ${c} reads back from CPU ${1 - c} and is in the image file`, JSON.stringify({ ...k, inImage }));
  }
  r.assert(perCpu[0].queue !== undefined && perCpu[1].queue !== undefined && perCpu[0].queue !== perCpu[1].queue,
    `blk-mq maps the two CPUs to different queues (CPU 0 -> queue ${perCpu[0].queue}, CPU 1 -> queue ${perCpu[1].queue})`, JSON.stringify(perCpu));
  r.assert(perCpu.every((k) => Number(k.irqs_after) > Number(k.irqs_before)),
    "both queues carry I/O: each CPU's writes complete on its own queue's MSI-X vector " +
      `(queue ${perCpu[0].queue}: ${perCpu[0].irqs_before} -> ${perCpu[0].irqs_after}, queue ${perCpu[1].queue}: ${perCpu[1].irqs_before} -> ${perCpu[1].irqs_after} interrupts)`,
    mq.join(' | '));
  if (extra.includes('--workers')) {
    // `--stats`: what each queue served, and where, printed when QEMU left.
    const line = [...r.device].reverse().find((/** @type {string} */ l) => l.startsWith('virtio-blk: stats ')) ?? '';
    const k = h.kv(line.slice('virtio-blk: stats '.length));
    const [q0, q1] = [k.q0 ?? '', k.q1 ?? ''].map((v) => /^thread(\d+):(\d+)$/.exec(v));
    r.assert(q0 !== null && q1 !== null && q0[1] !== q1[1] && Number(q0[2]) > 0 && Number(q1[2]) > 0,
      `each queue's requests were served on its own worker thread (queue 0: ${k.q0}, queue 1: ${k.q1})`, line);
  }
}

// ------------------------------------------------------------------ virtio-rng

/** @param {Run} r @param {Harness} h @param {Backend} backend */
async function rngFlow(r, h, backend) {
  if (!(await available(r, backend, 'virtio-rng'))) return;
  const lines = await bootWith(r, h, backend, { kind: 'rng' }, { tests: 'rng', label: 'boot' });
  const g = pick(lines, 'E2E-RNG:');
  const i = record(h, g, 'info');
  r.assert(i.driver === 'virtio_rng' && i.pcidriver === 'virtio-pci' && i.pci === '0x1af4:0x1044',
    "virtio_rng binds to the guest's 1af4:1044 function through virtio-pci", JSON.stringify(i));
  const k = h.kv(g.find((l) => l.startsWith('current=')) ?? '');
  r.assert(/^virtio_rng/.test(k.current ?? ''), `/sys/class/misc/hw_random/rng_current names it: ${k.current}`, JSON.stringify(k));
  const hex = /^[0-9a-f]{64}$/;
  r.assert(hex.test(k.read1 ?? '') && hex.test(k.read2 ?? '') && k.read1 !== k.read2, 'two 32-byte reads of /dev/hwrng return data, and differ', `read1=${k.read1} read2=${k.read2}`);
}
