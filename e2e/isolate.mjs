// @ts-check
/**
 * e2e/isolate.mjs - `muser vm --isolate` under a real guest:
 *
 *   1. crash: the guest makes ext2 filesystems on a virtio-blk disk and an
 *      NVMe disk (both image files; the NVMe doorbell page mapped into the
 *      guest and shadow doorbells off, so every NVMe doorbell is a store
 *      into memory a successor must adopt), and writes and fsyncs files on both while the harness
 *      SIGKILLs each device's serving child twice. The
 *      guest sees no I/O error and no hung task, keeps writing and
 *      unmounts cleanly; on the host e2fsck -fn is clean and every file
 *      the guest acknowledged has its bytes (debugfs).
 *   2. reload: a device file served with --watch is rewritten while the
 *      guest runs; the guest's next register read runs the new code, and
 *      the device's state (a count the guest wrote) came along.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fsck, hostFile } from './virtio.mjs';

/** @typedef {import('./harness.mjs').Harness} Harness @typedef {any} Run */

const FILES = 24;
/** A run not done by then is stopped (and fails). */
const VM_DEADLINE_S = 360;
/** After which acknowledged file (per disk) the harness kills that disk's child. */
const KILL_AFTER = { v: [4, 14], n: [8, 18] };

export function isolateScenarios() {
  return {
    isolate: {
      what: 'muser vm --isolate: SIGKILLs under a guest fsyncing files on virtio-blk and NVMe; a --watch reload under a guest',
      sample: 'counter',
      tests: '',
      sharedRam: true,
      check: () => {},
      flow: isolateFlow,
    },
  };
}

/**
 * Starts `muser vm ARGS`; output goes to LABEL.log when it ends.
 * @param {Run} r @param {Harness} h @param {string} label @param {string[]} args
 */
function startVm(r, h, label, args) {
  const deadline = setTimeout(() => {
    // A guest that lost its device hangs in D state: stop it (muser vm stops QEMU on SIGTERM).
    r.assert(false, `${label}: the guest finished within ${VM_DEADLINE_S} s`, run.stdout.slice(-600));
    child.kill('SIGTERM');
  }, VM_DEADLINE_S * 1000);
  const env = { ...process.env, MUSER_VM_CACHE: process.env.E2E_CACHE ?? '/var/cache/muser-e2e' };
  const child = spawn(process.execPath, [h.cli, 'vm', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { child, stdout: '', stderr: '', /** @type {Promise<number | null>} */ done: Promise.resolve(null) };
  child.stdout.on('data', (d) => (run.stdout += d.toString('latin1')));
  child.stderr.on('data', (d) => (run.stderr += d.toString('latin1')));
  run.done = new Promise((res) =>
    child.on('close', (code) => {
      clearTimeout(deadline);
      writeFileSync(join(r.dir, `${label}.log`), `$ muser vm ${args.join(' ')}\n--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}\n--- exit ${code}\n`);
      res(code);
    }),
  );
  return run;
}

/** Resolves once `pred()` holds; throws after `ms`. @param {() => boolean} pred @param {string} what */
async function until(pred, what, ms = 240_000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

/**
 * The pid serving the device whose log prefix is `name` now: the first
 * "child N serves" line, then each "M takes over".
 * @param {string} stderr @param {string} name
 */
function servingPid(stderr, name) {
  let pid;
  for (const line of stderr.split('\n')) {
    if (!line.startsWith(`[${name}]`)) continue;
    const serves = /child (\d+) serves/.exec(line);
    const over = /: (\d+) takes over/.exec(line);
    if (serves) pid = Number(serves[1]);
    if (over) pid = Number(over[1]);
  }
  return pid;
}

const md5 = (/** @type {Buffer} */ b) => createHash('md5').update(b).digest('hex');

/** @param {Run} r @param {Harness} h */
async function isolateFlow(r, h) {
  const dir = mkdtempSync(join(tmpdir(), 'muser-e2e-isolate-'));
  try {
    await reloadFlow(r, h, dir);
    await crashFlow(r, h, dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** @param {Run} r @param {Harness} h @param {string} dir */
async function crashFlow(r, h, dir) {
  const images = { v: join(dir, 'vda.img'), n: join(dir, 'nvme.img') };
  for (const image of Object.values(images)) {
    writeFileSync(image, '');
    truncateSync(image, 64 << 20);
  }
  const script = [
    'set -e',
    'for d in /dev/vda /dev/nvme0n1; do mke2fs -q $d >/dev/null; done',
    'mkdir -p /mnt/v /mnt/n',
    'mount -t ext4 /dev/vda /mnt/v',
    'mount -t ext4 /dev/nvme0n1 /mnt/n',
    'echo WRITING',
    'i=0',
    `while [ $i -lt ${FILES} ]; do`,
    '  for m in v n; do',
    '    dd if=/dev/urandom of=/mnt/$m/f$i bs=4096 count=32 conv=fsync 2>/dev/null',
    '    echo "ACK $m f$i $(md5sum < /mnt/$m/f$i | cut -d" " -f1)"',
    '  done',
    '  i=$((i+1))',
    'done',
    'umount /mnt/v',
    'umount /mnt/n',
    'echo UNMOUNTED',
    "dmesg | grep -i -E 'I/O error|blocked for more than|hung_task|timeout|reset|Buffer I/O|EXT4-fs error' | sed 's/^/KMSG /' || true",
  ].join('\n');
  const t0 = Date.now();
  const run = startVm(r, h, 'isolate-crash', ['--isolate', '--modules', 'virtio_blk,nvme,ext4', '--memory', '384M', '--run', script, 'virtio-blk', '--image', images.v, 'nvme', '--image', images.n, '--no-shadow-doorbells', '--poll', '--mmap-doorbells']);
  const names = { v: 'virtio-blk', n: 'nvme' };
  const acked = (/** @type {string} */ m) => [...run.stdout.matchAll(new RegExp(`^ACK ${m} f(\\d+) `, 'gm'))].length;
  /** @type {string[]} */
  const kills = [];
  const killer = (async () => {
    await until(() => run.stdout.includes('WRITING') || run.child.exitCode !== null, 'the guest to start writing');
    const plan = [...KILL_AFTER.v.map((n) => ({ m: 'v', n })), ...KILL_AFTER.n.map((n) => ({ m: 'n', n }))].sort((a, b) => a.n - b.n);
    for (const { m, n } of plan) {
      await until(() => acked(m) >= n || run.child.exitCode !== null, `file ${n} on ${names[/** @type {'v'} */ (m)]}`);
      if (run.child.exitCode !== null) return;
      const name = names[/** @type {'v'} */ (m)];
      const pid = servingPid(run.stderr, name);
      if (pid === undefined) throw new Error(`no serving child of ${name} in muser's log`);
      process.kill(pid, 'SIGKILL');
      kills.push(`${name} pid ${pid} after ${n} files`);
      // The next kill of this device waits for the successor to be named.
      await until(() => servingPid(run.stderr, name) !== pid || run.child.exitCode !== null, `a successor for ${name}`, 30_000);
    }
  })().catch((/** @type {unknown} */ e) => {
    // Caught at once: the run may hang until its deadline, and the reason must still be told.
    r.assert(false, 'crash: the harness killed every child it planned to', String(e));
  });
  const code = await run.done;
  await killer;
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  r.assert(kills.length === 4, `crash: 4 SIGKILLs during the writes (${kills.join('; ')})`, run.stderr.slice(-600));
  const takeovers = (run.stderr.match(/takes over/g) ?? []).length;
  r.assert(takeovers === 4, `crash: each killed child was replaced under the running guest (${takeovers} take-overs)`, run.stderr.slice(-600));
  r.assert(code === 0 && run.stdout.includes('UNMOUNTED'), `crash: the guest wrote ${FILES} fsync'd files on each disk and unmounted cleanly, exit ${code}, in ${secs} s`, run.stdout.slice(-800) + run.stderr.slice(-400));
  const kmsg = run.stdout.split('\n').filter((l) => l.startsWith('KMSG '));
  r.assert(kmsg.length === 0, 'crash: the guest kernel logged no I/O error, timeout, reset or hung task', kmsg.slice(0, 8).join('\n       '));
  for (const m of /** @type {const} */ (['v', 'n'])) {
    fsck(r, images[m], `(${names[m]}, after the kills)`);
    const acks = [...run.stdout.matchAll(new RegExp(`^ACK ${m} (f\\d+) ([0-9a-f]{32})`, 'gm'))];
    const bad = acks.filter(([, file, sum]) => {
      const data = hostFile(r, images[m], file);
      return data === undefined || md5(data) !== sum;
    });
    r.assert(acks.length === FILES && bad.length === 0, `crash: all ${acks.length} files the guest acknowledged on ${names[m]} have their bytes on the host`, bad.map(([, f]) => f).join(', '));
  }
}

/** A register device whose BAR0 offset 0 reads VERSION and offset 4 counts what the guest writes there. @param {number} version */
const deviceFile = (version) => `export default {
  name: 'reloadable',
  identity: { vendorId: 0x1234, deviceId: 0x11e0, classCode: 0xff0000 },
  state: { count: 0 },
  bars: {
    0: {
      size: 4096,
      read(offset, length, d) { return offset === 0 ? ${version} : offset === 4 ? d.state.count : 0; },
      write(offset, data, d) { if (offset === 4) d.state.count += data.readUInt32LE(0); },
    },
  },
};
`;

/** @param {Run} r @param {Harness} h @param {string} dir */
async function reloadFlow(r, h, dir) {
  const share = join(dir, 'share');
  const file = join(share, 'reloadable.mjs');
  mkdirSync(share, { recursive: true });
  writeFileSync(file, deviceFile(1));
  const script = [
    'set -e',
    'dev=$(grep -l 0x11e0 /sys/bus/pci/devices/*/device | xargs dirname)',
    // Memory decoding on (no driver binds this device), then BAR0's address.
    'echo 1 > $dev/enable',
    "bar=$(head -n1 $dev/resource | cut -d' ' -f1)",
    'devmem $((bar + 4)) 32 5',
    'devmem $((bar + 4)) 32 2',
    'echo "BEFORE version=$(( $(devmem $bar 32) )) count=$(( $(devmem $((bar + 4)) 32) ))"',
    'n=0; while [ ! -e reloaded ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done',
    'echo "AFTER version=$(( $(devmem $bar 32) )) count=$(( $(devmem $((bar + 4)) 32) ))"',
  ].join('\n');
  const run = startVm(r, h, 'isolate-reload', ['--watch', '--share', share, '--run', `cd ${share}; ${script}`, file]);
  await until(() => run.stdout.includes('BEFORE') || run.child.exitCode !== null, 'the guest to read the device');
  writeFileSync(file, deviceFile(2));
  await until(() => /muser: reloaded reloadable/.test(run.stderr) || run.child.exitCode !== null, 'the reload', 60_000);
  writeFileSync(join(share, 'reloaded'), '');
  const code = await run.done;
  const before = /BEFORE version=(\d+) count=(\d+)/.exec(run.stdout);
  const after = /AFTER version=(\d+) count=(\d+)/.exec(run.stdout);
  r.assert(before?.[1] === '1' && before?.[2] === '7', `reload: the guest drives version 1 of the device file (${before?.[0] ?? 'no answer'})`, run.stdout.slice(-600) + run.stderr.slice(-400));
  r.assert(code === 0 && after?.[1] === '2' && after?.[2] === '7', `reload: after the file changed, the same guest reads version 2 with its count kept, no reboot (${after?.[0] ?? 'no answer'})`, run.stdout.slice(-600) + run.stderr.slice(-400));
}
