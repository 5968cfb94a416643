// @ts-check
/**
 * e2e/harness.mjs - what every scenario drives its run with: the run's
 * logs and assertion tally (`Run`), device processes, the guest booted
 * under QEMU's vfio-user-pci (answering its E2E-REQ lines), the muser CLI,
 * and helpers to read the guest's serial output.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..');
export const CLI = join(REPO, 'dist/src/cli/main.js');

/** @typedef {import('./scenario.mjs').Scenario} Scenario */

export const HEX = (/** @type {number} */ v, d = 4) => `0x${v.toString(16).padStart(d, '0')}`;

/** One run: processes, logs, and the assertion tally. */
export class Run {
  /** @param {string} name @param {Scenario} sc */
  constructor(name, sc) {
    this.name = name;
    this.sc = sc;
    this.dir = join(process.env.E2E_LOGS ?? '/tmp/muser-e2e-logs', name);
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    this.sock = join(this.dir, `${sc.sample}.sock`);
    /** @type {string[]} */ this.serial = [];
    /** @type {string[]} */ this.device = [];
    /** @type {string[]} */ this.trace = [];
    /** @type {string[]} */ this.qemuErrors = [];
    this.passed = 0;
    this.failed = 0;
    /** @type {string | undefined} */ this.lspciText = undefined;
    /** @type {any} */ this.lspciData = undefined;
    /** @type {string | undefined} */ this.lspciNote = undefined;
    /** @type {Record<string, unknown>} */ this.extra = {};
    /** @type {Record<string, string[]>} */ this.extraLogs = {};
    this.qemuExit = /** @type {number | null} */ (null);
  }

  /** @param {boolean} ok @param {string} what @param {string} detail */
  assert(ok, what, detail) {
    if (ok) this.passed++;
    else this.failed++;
    console.log(`${ok ? 'PASS' : 'FAIL'} [${this.name}] ${what}${!ok && detail ? `\n       ${detail}` : ''}`);
  }

  /** @param {string} what @param {string} why */
  skip(what, why) {
    console.log(`SKIP [${this.name}] ${what}: ${why}`);
  }

  /** Guest lines with a prefix, prefix removed. @param {string} prefix */
  guest(prefix) {
    return this.serial.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length).trim());
  }
}

/** Parses `k=v` words. @param {string} line */
export function kv(line) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const m of line.matchAll(/(\w+)=(\S*)/g)) out[m[1]] = m[2];
  return out;
}

/** The guest's E2E-PCI lines as records (bdf, vendor, device, ...). @param {Run} r @returns {Record<string, string>[]} */
export function guestPci(r) {
  return r.guest('E2E-PCI:').map((l) => ({ ...kv(l), bdf: l.split(' ')[0] }));
}

/** Index of the first device log line matching re at or after `from`. @param {string[]} lines @param {RegExp} re */
export function findFrom(lines, re, from = 0) {
  for (let i = from; i < lines.length; i++) if (re.test(lines[i])) return i;
  return -1;
}

/** Runs a muser CLI command; resolves with its exit code and output. @param {string[]} args */
export function muser(args) {
  return /** @type {Promise<{ code: number, out: string, err: string }>} */ (new Promise((res) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b) => (out += b));
    p.stderr.on('data', (b) => (err += b));
    p.on('close', (code) => res({ code: code ?? -1, out, err }));
  }));
}

/**
 * Starts a device process; its output lines go to `lines` and NAME.log.
 * @param {Run} r @param {string} name @param {string[]} argv @param {string} sock @param {string[]} lines
 */
export async function startProcess(r, name, argv, sock, lines) {
  const log = createWriteStream(join(r.dir, `${name}.log`));
  const p = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  for (const s of [p.stdout, p.stderr]) {
    createInterface({ input: s }).on('line', (l) => {
      lines.push(l);
      log.write(l + '\n');
    });
  }
  for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((res) => setTimeout(res, 50));
  if (!existsSync(sock)) throw new Error(`${name} never listened on ${sock}: ${lines.join(' | ')}`);
  return p;
}

/** @param {import('node:child_process').ChildProcess} p */
export async function stopProcess(p) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const closed = new Promise((res) => p.on('close', res));
  p.kill('SIGCONT');
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
  await closed;
  clearTimeout(timer);
}

/**
 * @typedef {{ tests?: string, qemuArgs?: string[], smp?: number, label?: string,
 *   onRequest?: (verb: string, arg: string | undefined) => boolean }} BootOptions
 * tests: guest scripts (default: the scenario's); qemuArgs: extra QEMU
 * arguments (e.g. QEMU's own devices); smp: vCPUs; label: suffix of the log
 * files, for scenarios that boot more than once; onRequest: answers guest
 * requests the harness does not know (true when handled).
 */

/**
 * Boots the guest against every device; answers its E2E-REQ lines.
 * @param {Run} r @param {Map<string, { proc: import('node:child_process').ChildProcessWithoutNullStreams, sock: string }>} devs
 * @param {BootOptions} [o]
 */
export function bootGuest(r, devs, o = {}) {
  const initrd = process.env.E2E_INITRD;
  if (!initrd) throw new Error('E2E_INITRD is not set (run through e2e/run.sh)');
  const kernel = join(process.env.E2E_CACHE ?? '/var/cache/muser-e2e', 'kernel/vmlinuz');
  const mem = r.sc.sharedRam
    ? ['-machine', 'q35,memory-backend=mem', '-object', 'memory-backend-memfd,id=mem,size=512M,share=on']
    : ['-machine', 'q35'];
  const args = [
    '-accel', 'tcg', '-cpu', 'max', '-m', '512M', ...(o.smp ? ['-smp', String(o.smp)] : []), ...mem,
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', kernel, '-initrd', initrd,
    '-append', `console=ttyS0 panic=-1 loglevel=4 e2e.test=${o.tests ?? r.sc.tests}`,
    '-trace', 'vfio_user*',
    ...(o.qemuArgs ?? []),
  ];
  for (const d of devs.values()) args.push('-device', JSON.stringify({ driver: 'vfio-user-pci', socket: { path: d.sock, type: 'unix' } }));
  const label = o.label ? `-${o.label}` : '';
  writeFileSync(join(r.dir, `qemu-args${label}.txt`), args.map((a) => `'${a}'`).join(' ') + '\n');
  const script = `. "${join(HERE, 'lib.sh')}"; qemu_run "$@"`;
  const q = spawn('bash', ['-c', script, 'qemu', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  const serialLog = createWriteStream(join(r.dir, `serial${label}.log`));
  const qemuLog = createWriteStream(join(r.dir, `qemu${label}.log`));
  const primary = devs.get(r.sc.sample)?.proc;
  createInterface({ input: q.stdout }).on('line', (raw) => {
    const l = raw.replace(/\r$/, '');
    r.serial.push(l);
    serialLog.write(l + '\n');
    const m = /^E2E-REQ: (\S+)(?: (\S+))?/.exec(l);
    if (!m) return;
    const target = devs.get(m[2] ?? '')?.proc;
    if (m[1] === 'input' && primary) primary.stdin.write(`input ${m[2]}\n`);
    else if (m[1] === 'stop' && target) target.kill('SIGSTOP');
    else if (m[1] === 'continue' && target) target.kill('SIGCONT');
    else if (o.onRequest?.(m[1], m[2])) return;
    else r.qemuErrors.push(`harness: unknown request '${l}'`);
  });
  createInterface({ input: q.stderr }).on('line', (l) => {
    qemuLog.write(l + '\n');
    if (/^vfio_user/.test(l) || /^\d+@\d+\.\d+:vfio_user/.test(l)) r.trace.push(l.replace(/^\d+@[\d.]+:/, ''));
    else r.qemuErrors.push(l);
  });
  const timeoutS = Number(process.env.E2E_BOOT_TIMEOUT ?? 150);
  return new Promise((res) => {
    const timer = setTimeout(() => {
      r.qemuErrors.push(`timeout after ${timeoutS} s`);
      q.kill('SIGKILL');
    }, timeoutS * 1000);
    q.on('close', (code) => {
      clearTimeout(timer);
      for (const d of devs.values()) d.proc.kill('SIGCONT');
      r.qemuExit = code;
      res(code);
    });
  });
}

/**
 * What a scenario's flow gets to drive devices and the guest.
 * @typedef {{ bootGuest: typeof bootGuest, startProcess: typeof startProcess, stopProcess: typeof stopProcess,
 *   kv: typeof kv, cli: string }} Harness
 */
