// `muser vm`'s parts that need no QEMU: its arguments, the console markers
// vm/init prints, the modules tree (dependencies from each module's own
// .modinfo), the kernel's version from its boot header, and how it finds
// (or explains the lack of) a QEMU new enough for vfio-user-pci.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseVmArgs, GuestConsole, type ConsoleEvent, VmError } from '../src/cli/vm/index.js';
import { parseMemory } from '../src/cli/vm/args.js';
import { ModuleTree, modinfo } from '../src/cli/vm/modules.js';
import { findKernel, kernelVersionOf } from '../src/cli/vm/kernel.js';
import { findQemu, parseQemuVersion } from '../src/cli/vm/qemu.js';
import { guestConfig, guestWorkdir, qemuArgs } from '../src/cli/vm/guest.js';
import { UsageError } from '../src/cli/usage.js';

const sock = (i: number): string => `/run/x/dev${i}.sock`;

test('vm args: its own options first, then devices as muser run names them, each on a socket of its own', () => {
  const a = parseVmArgs(
    ['--modules', 'gpio-pci-idio-16,virtio_blk', '--modules=nvme', '--share', '/tmp', '--run', 'exit 3', '--cpus', '2', '--memory', '1G', 'gpio', 'virtio-blk', '--size', '64M', './dev.ts', '--id=0x42', '-v'],
    sock,
  );
  assert.deepEqual(a.modules, ['gpio-pci-idio-16', 'virtio_blk', 'nvme']);
  assert.deepEqual(a.shares, ['/tmp']);
  assert.equal(a.run, 'exit 3');
  assert.equal(a.cpus, 2);
  assert.equal(a.memoryMiB, 1024);
  assert.equal(a.verbose, true);
  assert.deepEqual(
    a.devices.map((d) => [d.device, d.socket, d.options]),
    [
      ['gpio', sock(0), {}],
      ['virtio-blk', sock(1), { size: '64M' }],
      ['./dev.ts', sock(2), { id: '0x42' }],
    ],
  );
  assert.deepEqual(parseVmArgs([], sock).devices, [], 'no device at all is a plain guest');
  const iso = parseVmArgs(['--isolate', '--watchdog=500', 'counter'], sock);
  assert.deepEqual([iso.isolate, iso.watch, iso.watchdogMs], [true, undefined, 500], '--isolate and --watchdog, as for muser run');
  const watch = parseVmArgs(['--watch', './dev.js'], sock);
  assert.deepEqual([watch.isolate, watch.watch], [true, true], '--watch implies --isolate');
  assert.equal(parseVmArgs(['counter'], sock).isolate, undefined, 'not isolated unless asked');
});

test('vm args: mistakes are usage errors that say what is wrong', () => {
  const bad: [string[], RegExp][] = [
    [['--bogus', 'gpio'], /unknown option --bogus/],
    [['--run'], /--run needs a value/],
    [['gpio', '--run', 'true'], /--run must come before the first device/],
    [['./dev.js', '--modules=x'], /--modules must come before the first device/],
    [['gpio', '--nope'], /^vm: sample 'gpio' has no option --nope/],
    [['no-such-sample'], /unknown sample 'no-such-sample'/],
    [['--cpus', '0', 'gpio'], /--cpus takes a number of vCPUs from 1 to 64, got 0/],
    [['--memory', '12T'], /--memory takes a size/],
    [['--config', 'x.json'], /--config is not supported/],
    [['--isolate=yes', 'gpio'], /--isolate takes no value/],
    [['gpio', '--watch'], /--watch must come before the first device/],
    [['--watchdog', '5', 'gpio'], /^vm: --watchdog takes a whole number of ms in \[10, 600000\], got 5/],
  ];
  for (const [args, re] of bad) assert.throws(() => parseVmArgs(args, sock), (e: unknown) => e instanceof UsageError && re.test(e.message), args.join(' '));
  assert.equal(parseMemory('512'), 512);
  assert.equal(parseMemory('2G'), 2048);
  assert.equal(parseMemory('256MiB'), 256);
});

/** Feeds `chunks` to a GuestConsole; what went where. */
function feed(chunks: (string | Buffer)[], nonce = 'n0nce'): { log: string; guest: string; events: ConsoleEvent[]; phase: string } {
  let log = '';
  let guest = '';
  const events: ConsoleEvent[] = [];
  const c = new GuestConsole(nonce, { log: (d) => (log += d.toString('latin1')), guest: (d) => (guest += d.toString('latin1')), event: (e) => events.push(e) });
  for (const ch of chunks) c.push(Buffer.isBuffer(ch) ? ch : Buffer.from(ch, 'latin1'));
  c.end();
  return { log, guest, events, phase: c.phase };
}

test('vm console: the markers split the boot log from the guest output, byte for byte, even cut anywhere', () => {
  const stream = 'SeaBIOS\r\n[ 0.1] Linux\r\n\x1fmuser-vm:n0nce:begin\x1fout\x001\nno newline at end\x1fmuser-vm:n0nce:end:3\x1freboot: Power down\r\n';
  const whole = feed([stream]);
  assert.equal(whole.log, 'SeaBIOS\r\n[ 0.1] Linux\r\nreboot: Power down\r\n');
  assert.equal(whole.guest, 'out\x001\nno newline at end');
  assert.deepEqual(whole.events, [{ kind: 'begin' }, { kind: 'end', status: 3 }]);
  for (let cut = 1; cut < stream.length; cut++) {
    const parts = feed([stream.slice(0, cut), stream.slice(cut)]);
    assert.equal(parts.guest, whole.guest, `cut at ${cut}`);
    assert.equal(parts.log, whole.log, `cut at ${cut}`);
  }
  // one byte at a time, too
  assert.equal(feed([...stream]).guest, whole.guest);
});

test('vm console: another nonce, a stray separator and errors', () => {
  const other = feed(['\x1fmuser-vm:n0nce:begin\x1fa\x1fmuser-vm:0ther:end:1\x1fb\x1f c']);
  assert.equal(other.guest, 'a\x1fmuser-vm:0ther:end:1\x1fb\x1f c', "a marker with another nonce is the guest's output");
  assert.deepEqual(other.events, [{ kind: 'begin' }]);
  assert.equal(feed(['\x1fmuser-vm:n0nce:begin\x1fdata ends in \x1f']).guest, 'data ends in \x1f', 'a held-back separator comes out at the end');
  const err = feed(['boot\r\n\x1fmuser-vm:n0nce:error:module x did not load in the guest: insmod: bad\r\n\x1f']);
  assert.deepEqual(err.events, [{ kind: 'error', message: 'module x did not load in the guest: insmod: bad' }]);
  assert.equal(err.phase, 'done');
  assert.deepEqual(feed(['\x1fmuser-vm:n0nce:end:300\x1f']).events, [{ kind: 'end', status: 300 & 0xff }], 'a status is a byte, as a shell exit status is');
});

/** A fake module: an ELF-less blob whose .modinfo strings say its name and dependencies. */
function ko(name: string, depends: string): Buffer {
  return Buffer.from(`\x7fELF junk\0name=${name}\0depends=${depends}\0vermagic=1.0 SMP\0`, 'latin1');
}

test('vm modules: found by name (- or _), dependencies first and once, compressed or not; clear errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-vm-mods-'));
  try {
    mkdirSync(join(dir, 'kernel/drivers/gpio'), { recursive: true });
    mkdirSync(join(dir, 'kernel/fs/9p'), { recursive: true });
    writeFileSync(join(dir, 'kernel/drivers/gpio/gpio-pci-idio-16.ko'), ko('gpio_pci_idio_16', 'gpio-idio-16'));
    writeFileSync(join(dir, 'kernel/drivers/gpio/gpio-idio-16.ko.gz'), gzipSync(ko('gpio_idio_16', 'gpio-regmap,regmap-mmio')));
    writeFileSync(join(dir, 'kernel/drivers/gpio/gpio-regmap.ko'), ko('gpio_regmap', ''));
    writeFileSync(join(dir, 'kernel/fs/9p/9p.ko'), ko('9p', 'gpio-regmap'));
    writeFileSync(join(dir, 'modules.builtin'), 'kernel/drivers/virtio/virtio_pci.ko\n');
    const tree = new ModuleTree(dir, '1.0');
    const got = tree.resolve(['9p', 'gpio_pci_idio_16', 'virtio-pci']);
    assert.deepEqual(got.map((m) => m.name), ['gpio_regmap', '9p', 'gpio_idio_16', 'gpio_pci_idio_16'], 'regmap-mmio (a dependency with no file) and virtio_pci (built in) are left out');
    assert.equal(modinfo(got[2].data, 'name'), 'gpio_idio_16', 'the .gz module is unpacked');
    assert.throws(() => tree.resolve(['idio']), (e: unknown) => e instanceof VmError && /module idio does not exist in the guest kernel 1\.0 .*similar names: gpio_idio_16, gpio_pci_idio_16/.test(e.message));
    assert.throws(() => tree.resolve(['nosuch']), /module nosuch does not exist .*if it is built into the kernel, leave it out/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("vm kernel: the release comes from the bzImage's boot header; --kernel from a build tree finds its modules there", () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'muser-vm-kernel-')));
  try {
    const image = Buffer.alloc(0x4000);
    image.write('HdrS', 0x202, 'latin1');
    image.writeUInt16LE(0x1000, 0x20e); // kernel_version, relative to 0x200
    image.write('6.12.9-dev (me@box) #1 SMP\0', 0x1200, 'latin1');
    mkdirSync(join(dir, 'arch/x86/boot'), { recursive: true });
    const bzImage = join(dir, 'arch/x86/boot/bzImage');
    writeFileSync(bzImage, image);
    writeFileSync(join(dir, 'modules.order'), 'drivers/gpio/gpio-pci-idio-16.o\n');
    writeFileSync(join(dir, 'not-a-kernel'), 'hello');
    assert.equal(kernelVersionOf(bzImage), '6.12.9-dev');
    assert.equal(kernelVersionOf(join(dir, 'not-a-kernel')), undefined);
    assert.equal(kernelVersionOf(join(dir, 'missing')), undefined);
    const k = findKernel({ kernel: bzImage });
    assert.deepEqual([k.version, k.modules], ['6.12.9-dev', dir], 'the build tree (it has modules.order) holds the modules');
    assert.throws(() => findKernel({ kernel: join(dir, 'missing') }), (e: unknown) => e instanceof VmError && /--kernel .*missing: no such file/.test(e.message));
    assert.throws(() => findKernel({ kernel: join(dir, 'not-a-kernel') }), /--kernel .*not-a-kernel: not a bzImage/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vm qemu: a QEMU older than 10.1.1 is refused with its version and how to get a newer one; none at all says so', () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-vm-qemu-'));
  const fake = (name: string, version: string): string => {
    const file = join(dir, name);
    writeFileSync(file, `#!/bin/sh\necho "QEMU emulator version ${version} (Debian)"\n`);
    chmodSync(file, 0o755);
    return file;
  };
  const path = process.env.PATH;
  try {
    assert.deepEqual(parseQemuVersion('QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-2~bpo13+1)'), [11, 1, 3]);
    assert.deepEqual(parseQemuVersion('QEMU emulator version 10.1'), [10, 1, 0]);
    assert.throws(() => findQemu({ qemu: fake('old', '7.2.0') }), (e: unknown) => e instanceof VmError && /QEMU 7\.2\.0 at .*old is too old: vfio-user-pci needs QEMU 10\.1\.1 or later; run `muser vm setup`/.test(e.message));
    assert.throws(() => findQemu({ qemu: fake('almost', '10.1.0') }), /QEMU 10\.1\.0 .* is too old/);
    assert.equal(findQemu({ qemu: fake('good', '10.1.1') }).version, 'QEMU emulator version 10.1.1 (Debian)');
    assert.throws(() => findQemu({ qemu: join(dir, 'missing') }), /--qemu .*missing: no such file/);
    process.env.PATH = dir; // no qemu-system-x86_64 here, and an empty cache
    assert.throws(() => findQemu({ cache: dir }), /: no QEMU: no qemu-system-x86_64 on PATH and none set up in .*; run `muser vm setup`/);
    fake('qemu-system-x86_64', '9.2.0');
    assert.throws(() => findQemu({ cache: dir }), /QEMU 9\.2\.0 at .*qemu-system-x86_64 is too old/);
  } finally {
    process.env.PATH = path;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vm guest: settings quoted for the shell, the working folder follows a share, devices and shares on QEMU', () => {
  assert.equal(guestWorkdir(['/home/me/src'], '/home/me/src/driver'), '/home/me/src/driver');
  assert.equal(guestWorkdir(['/home/me/src'], '/home/me/srcs'), '/', 'a sibling with the same prefix is not inside the share');
  const config = guestConfig({ nonce: 'abc', modules: [], shares: ["/it's here", '/b'], workdir: '/', run: true, term: 'dumb' });
  assert.match(config, /^SHARES='muser0=\/it'\\''s here\nmuser1=\/b'$/m);
  const args = qemuArgs({ accel: 'tcg', cpus: 1, memoryMiB: 256, kernel: 'k', initrd: 'i', cmdline: 'c', sockets: ['/s/a.sock'], shares: ['/x,y'], interactive: false });
  const at = (flag: string, value: RegExp): boolean => args.some((a, i) => args[i - 1] === flag && value.test(a));
  assert.ok(at('-object', /^memory-backend-memfd,id=mem,size=256M,share=on$/), 'guest RAM is a shared memfd');
  assert.ok(at('-device', /^\{"driver":"vfio-user-pci","socket":\{"path":"\/s\/a\.sock","type":"unix"\}\}$/));
  assert.ok(at('-fsdev', /path=\/x,,y,/), 'a comma in a path is doubled for QEMU');
  assert.ok(at('-run-with', /^exit-with-parent=on$/), 'QEMU never outlives muser');
});
