// `muser vm` booting real guests under QEMU (TCG where KVM does not work):
// a newcomer's TypeScript device file that Linux's gpio-pci-idio-16 binds
// to and drives, a sample beside it, a shared folder both ways, --run's exit
// status; a SIGTERM mid-boot and the errors a user meets, each leaving no
// process, socket or temporary file behind. One full boot: the rest of the
// ways a run ends (a panic, QEMU killed, the interactive shell) are in the
// e2e `vm` scenario.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished, processesMentioning, startVm, vmUnavailable } from './helpers/vm.js';
import { runCli } from './helpers/timer-process.js';
import { installedCache } from '../src/cli/vm/cache.js';

const skip = vmUnavailable();

/**
 * A device file as a newcomer writes it, TypeScript, in a folder of its
 * own: an ACCES PCI-IDIO-16 (the ids and the I/O BAR Linux's
 * gpio-pci-idio-16 drives) whose outputs read back, logging each write.
 */
const NEWCOMER_DEVICE = `const outputs: number[] = [0, 0];
export default {
  name: 'my-idio-16',
  identity: { vendorId: 0x494f, deviceId: 0x0dc8, classCode: 0xff0000 },
  bars: {
    2: {
      kind: 'io',
      size: 256,
      read: (offset: number): number => (offset === 0 ? outputs[0] : offset === 4 ? outputs[1] : 0),
      write(offset: number, data: Buffer): void {
        if (offset !== 0 && offset !== 4) return;
        outputs[offset / 4] = data[0];
        console.error(\`my-idio-16: outputs=0x\${(outputs[0] | (outputs[1] << 8)).toString(16)}\`);
      },
    },
  },
  interrupts: { intx: true },
};
`;

test('vm --modules --share --run: Linux binds its driver to a TS device file and drives it; host files both ways; the exit status', { skip, timeout: 180_000 }, async () => {
  const share = mkdtempSync(join(tmpdir(), 'muser-vm-share-'));
  try {
    const note = `from the host ${process.pid}`;
    writeFileSync(join(share, 'note.txt'), `${note}\n`);
    writeFileSync(join(share, 'dev.ts'), NEWCOMER_DEVICE);
    const script = [
      'cat note.txt',
      'echo "pwd=$(pwd)"',
      'for d in /sys/bus/pci/devices/*; do drv=$(readlink $d/driver); echo "pci $(cat $d/vendor):$(cat $d/device) driver=${drv##*/}"; done',
      // OUT9 of the board: line 9 of the gpiochip the driver registered
      'chip=$(ls -d /sys/class/gpio/gpiochip* | head -n1); n=$(( $(cat $chip/base) + 9 ))',
      'echo $n > /sys/class/gpio/export && echo 1 > /sys/class/gpio/gpio$n/value && echo out9-set',
      'echo written in the guest > from-guest.txt',
      'exit 3',
    ].join('\n');
    const t0 = Date.now();
    const vm = startVm(['--modules', 'gpio-pci-idio-16', '--share', share, '--run', script, './dev.ts', 'counter'], { cwd: share });
    const r = await finished(vm);
    const seconds = (Date.now() - t0) / 1000;
    assert.equal(r.code, 3, `exit status of the command; stderr:\n${r.stderr}\nstdout:\n${r.stdout}`);
    assert.ok(r.stdout.startsWith(`${note}\n`), `the command's output is stdout, from its first byte: ${JSON.stringify(r.stdout.slice(0, 200))}`);
    assert.match(r.stdout, new RegExp(`^pwd=${share}$`, 'm'), 'the guest starts in the shared folder muser vm was started in');
    assert.match(r.stdout, /^pci 0x494f:0x0dc8 driver=pci-idio-16$/m, "Linux's gpio-pci-idio-16 is bound to the device file");
    assert.match(r.stdout, /^pci 0x1af4:0x10ff driver=$/m, 'the counter sample beside it is a PCI function too');
    assert.match(r.stdout, /^out9-set$/m, 'the guest sets an output through the driver');
    assert.match(r.stderr, /^my-idio-16: outputs=0x200$/m, "the device file's own write callback saw the driver set OUT9");
    assert.equal(readFileSync(join(share, 'from-guest.txt'), 'utf8'), 'written in the guest\n', 'what the guest wrote is in the host folder');
    assert.deepEqual(r.left, [], 'no private folder, socket or QEMU left');
    console.log(`# muser vm: booted, ran and powered off in ${seconds.toFixed(1)} s`);
  } finally {
    rmSync(share, { recursive: true, force: true });
  }
});

test('vm: SIGTERM while the guest boots stops QEMU and the devices, removes the sockets, exits 143', { skip, timeout: 120_000 }, async () => {
  const vm = startVm(['--run', 'sleep 600', 'counter', 'gpio']);
  const deadline = Date.now() + 60_000;
  while (processesMentioning(vm.tmp).length === 0) {
    assert.ok(Date.now() < deadline, `QEMU never started: ${vm.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  vm.kill('SIGTERM');
  const r = await finished(vm);
  assert.equal(r.code, 143, r.stderr);
  assert.match(r.stderr, /muser vm: stopped by SIGTERM/);
  assert.deepEqual(r.left, []);
});

test('vm: a module the guest kernel lacks, and a device file that throws, fail before booting and leave nothing', { skip, timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-vm-bad-'));
  try {
    const missing = startVm(['--modules', 'gpio-pci-idio-16,no_such_driver', '--run', 'true', 'counter']);
    const m = await finished(missing);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /muser vm: module no_such_driver does not exist in the guest kernel \S+ \(/);
    assert.deepEqual(m.left, []);

    writeFileSync(join(dir, 'broken.mjs'), "export default () => { throw new Error('the board is on fire'); };\n");
    const broken = startVm(['--run', 'true', 'counter', join(dir, 'broken.mjs')]);
    const b = await finished(broken);
    assert.equal(b.code, 1);
    assert.match(b.stderr, /muser vm: cannot start .*broken\.mjs: the board is on fire/, "the device's own error");
    assert.deepEqual(b.left, [], "the counter's socket went with the private folder; no QEMU was started");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vm setup: on a complete cache, one line per step, nothing downloaded, nothing changed', { skip, timeout: 60_000 }, async () => {
  const cache = installedCache()!;
  const stamp = join(cache, '.setup-ok');
  const before = statSync(stamp).mtimeMs;
  const r = await runCli(['vm', 'setup']);
  assert.equal(r.code, 0, r.stderr);
  const steps = r.stdout.trim().split('\n');
  assert.ok(steps.every((l) => l.startsWith('[muser vm setup +')), r.stdout);
  for (const step of ['host tools:', 'qemu:', 'busybox:', 'kernel:', 'ready:']) assert.ok(steps.some((l) => l.includes(` ${step} `)), `a line for ${step}\n${r.stdout}`);
  assert.ok(!/downloading|apt: reading/.test(r.stdout), `nothing fetched:\n${r.stdout}`);
  assert.match(r.stdout, new RegExp(`ready: .* in ${cache}$`, 'm'), 'it checked the cache muser vm uses');
  assert.equal(statSync(stamp).mtimeMs, before, 'the complete cache is left untouched');
});
