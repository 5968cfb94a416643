// @ts-check
/**
 * e2e/vm.mjs - `muser vm`, the one-command guest, in the ways a run ends
 * that npm test does not boot for (test/vm.test.ts has --run, --share,
 * --modules, SIGTERM mid-boot and the early errors):
 *
 *   1. the interactive shell (stdin a pipe here): --kernel given explicitly,
 *      a sample with options (virtio-blk --size), --cpus and --memory seen
 *      by the guest; Ctrl-C (a 0x03 byte) interrupts the guest's command and
 *      not muser; `exit 4` powers off and muser exits 4;
 *   2. a guest kernel panic: muser says so and exits 1;
 *   3. QEMU killed (SIGKILL) while the command runs: muser says so, exits 1;
 *   4. Ctrl-C (SIGINT) to muser while the command runs: exits 130.
 * After each: no private folder, socket or process left (TMPDIR is the
 * run's own). Uses the cache e2e/setup-qemu.sh filled (MUSER_VM_CACHE=$E2E_CACHE).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** @typedef {import('./harness.mjs').Harness} Harness @typedef {any} Run */

export function vmScenarios() {
  return {
    vm: {
      what: 'muser vm: interactive shell, Ctrl-C in the guest, a panic, QEMU killed, SIGINT; clean teardown each time',
      sample: 'counter',
      tests: '',
      sharedRam: true,
      check: () => {},
      flow: vmFlow,
    },
  };
}

/**
 * Starts `muser vm ARGS` with a TMPDIR of its own; its output is logged to LABEL.log.
 * @param {Run} r @param {Harness} h @param {string} label @param {string[]} args
 */
function startVm(r, h, label, args) {
  const tmp = mkdtempSync(join(tmpdir(), 'muser-e2e-vm-'));
  const env = { ...process.env, TMPDIR: tmp, MUSER_VM_CACHE: process.env.E2E_CACHE ?? '/var/cache/muser-e2e' };
  const child = spawn(process.execPath, [h.cli, 'vm', ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  const run = { tmp, child, stdout: '', stderr: '', /** @type {Promise<number | null>} */ done: Promise.resolve(null) };
  child.stdout.on('data', (d) => (run.stdout += d.toString('latin1')));
  child.stderr.on('data', (d) => (run.stderr += d.toString('latin1')));
  run.done = new Promise((res) =>
    child.on('close', (code) => {
      writeFileSync(join(r.dir, `${label}.log`), `$ muser vm ${args.join(' ')}\n--- stdout\n${run.stdout}\n--- stderr\n${run.stderr}\n--- exit ${code}\n`);
      res(code);
    }),
  );
  return run;
}

/** Resolves once `pred()` holds; throws after `ms`. @param {() => boolean} pred @param {string} what */
async function until(pred, what, ms = 120_000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** Processes whose command line mentions `text`. @param {string} text */
function mentioning(text) {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(text);
    } catch {
      return false;
    }
  });
}

/** Asserts nothing of a run is left. @param {Run} r @param {string} label @param {{ tmp: string }} run */
function checkClean(r, label, run) {
  const left = [...readdirSync(run.tmp).filter((f) => f.startsWith('muser-vm-')), ...mentioning(run.tmp).map((p) => `pid ${p}`)];
  r.assert(left.length === 0, `${label}: no private folder, socket or process left`, left.join(', '));
  rmSync(run.tmp, { recursive: true, force: true });
}

/** @param {Run} r @param {Harness} h */
async function vmFlow(r, h) {
  const cache = process.env.E2E_CACHE ?? '/var/cache/muser-e2e';
  // 1. the interactive shell
  {
    const t0 = Date.now();
    const run = startVm(r, h, 'interactive', ['--kernel', join(cache, 'kernel/vmlinuz'), '--modules', 'virtio_blk', '--cpus', '2', '--memory', '384M', 'virtio-blk', '--size', '64M']);
    const prompt = 'muser-vm:/# ';
    const prompts = () => run.stdout.split(prompt).length - 1;
    await until(() => prompts() >= 1, 'the shell prompt');
    r.assert(true, `interactive: a shell prompt after ${((Date.now() - t0) / 1000).toFixed(1)} s`, '');
    run.child.stdin.write('echo "cpus=$(nproc) mem=$(( $(sed -n "s/^MemTotal: *\\([0-9]*\\).*/\\1/p" /proc/meminfo) / 1024 )) vda=$(cat /sys/block/vda/size) kernel=$(uname -r)"\n');
    await until(() => /cpus=\d+ mem=\d+ vda=\d+ kernel=\S+/.test(run.stdout), 'the answer');
    const m = /cpus=(\d+) mem=(\d+) vda=(\d+) kernel=(\S+)/.exec(run.stdout) ?? [];
    r.assert(m[1] === '2' && Number(m[2]) > 300 && Number(m[2]) <= 384 && m[3] === String(64 * 2048) && m[4].replace(/\r/g, '') !== '',
      `interactive: --cpus 2, --memory 384M, virtio-blk --size 64M as /dev/vda with --modules virtio_blk, on --kernel (cpus=${m[1]} MiB=${m[2]} sectors=${m[3]} ${m[4]})`, run.stdout.slice(-400));
    const before = prompts();
    run.child.stdin.write('sleep 300\n');
    await new Promise((res) => setTimeout(res, 1500));
    run.child.stdin.write('\x03');
    await until(() => prompts() > before, 'the prompt after Ctrl-C', 30_000);
    run.child.stdin.write('echo still-here\n');
    await until(() => /\nstill-here\r/.test(run.stdout), 'the shell after Ctrl-C', 30_000);
    r.assert(run.child.exitCode === null, 'interactive: Ctrl-C interrupts the command in the guest, and muser keeps running', '');
    run.child.stdin.write('exit 4\n');
    const code = await run.done;
    r.assert(code === 4, `interactive: \`exit 4\` powers the guest off and muser exits 4 (${code})`, run.stderr.slice(-400));
    checkClean(r, 'interactive', run);
  }
  // 2. a guest kernel panic
  {
    const run = startVm(r, h, 'panic', ['--run', 'echo started; echo c > /proc/sysrq-trigger; echo not-reached', 'counter']);
    const code = await run.done;
    r.assert(code === 1 && /muser vm: the guest kernel panicked: Kernel panic - not syncing: sysrq triggered crash/.test(run.stderr) && !run.stdout.includes('not-reached'),
      `panic: muser says the guest kernel panicked and exits 1 (${code})`, run.stderr.slice(-400));
    checkClean(r, 'panic', run);
  }
  // 3. QEMU killed, 4. SIGINT to muser: both while the command runs
  for (const [label, stop, want, re] of /** @type {const} */ ([
    ['qemu-killed', 'qemu', 1, /muser vm: QEMU died \(SIGKILL\)/],
    ['sigint', 'muser', 130, /muser vm: stopped by SIGINT/],
  ])) {
    const run = startVm(r, h, label, ['--run', 'echo started; sleep 600', 'counter', 'gpio']);
    await until(() => run.stdout.includes('started\n'), 'the command to start');
    if (stop === 'qemu') for (const pid of mentioning(run.tmp)) process.kill(Number(pid), 'SIGKILL');
    else run.child.kill('SIGINT');
    const code = await run.done;
    r.assert(code === want && re.test(run.stderr), `${label}: muser exits ${want} and says why (${code}: ${re.exec(run.stderr)?.[0] ?? 'no such line'})`, run.stderr.slice(-400));
    checkClean(r, label, run);
  }
}
