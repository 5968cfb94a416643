/**
 * One `muser vm` run: serve the devices on private sockets, boot QEMU with
 * each attached as a vfio-user-pci device, hand the console to the user (or
 * run --run's command), and on every way out (the guest powers off, a
 * signal, a panic, QEMU dying, an error) stop QEMU, close the devices and
 * remove the private folder with the sockets and the initramfs.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isatty } from 'node:tty';
import { Server } from '../../server/server.js';
import { isModulePath, loadDevice, startIsolated } from '../run/index.js';
import { parseVmArgs, type VmArgs } from './args.js';
import { installedCache, setupCacheDir } from './cache.js';
import { GuestConsole, type ConsoleEvent } from './console.js';
import { VmError } from './error.js';
import { checkShares, findBusybox, guestConfig, guestModules, guestWorkdir, kernelCmdline, qemuArgs } from './guest.js';
import { writeInitramfs } from './initramfs.js';
import { findKernel } from './kernel.js';
import { findQemu, kvmUsable, type Qemu } from './qemu.js';
import { VM_ASSETS } from './setup.js';

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
type StopSignal = (typeof STOP_SIGNALS)[number];
const SIGNAL_NUMBER: Record<StopSignal, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** Runs `muser vm [options] <device>...`; resolves to the exit code. */
export async function runVm(argv: readonly string[]): Promise<number> {
  const a = parseVmArgs(argv, (i) => `device${i}.sock`);
  const run = new VmRun(a);
  try {
    return await run.go();
  } catch (e) {
    if (!(e instanceof VmError)) throw e;
    run.say(e.message);
    return 1;
  } finally {
    run.cleanup();
  }
}

/** The last `max` characters of a stream. */
class Tail {
  text = '';
  constructor(private readonly max: number) {}
  push(data: Buffer): void {
    this.text += data.toString('latin1');
    if (this.text.length > this.max * 2) this.text = this.text.slice(-this.max);
  }
  lines(n: number): string[] {
    return this.text.replace(/\r/g, '').split('\n').filter((l) => l.trim() !== '').slice(-n);
  }
}

class VmRun {
  private signal: StopSignal | undefined;
  /** What a stop signal does now (stop QEMU once it runs). */
  private onStop: (() => void) | undefined;
  private readonly onSignal = (s: StopSignal): void => {
    this.signal ??= s;
    this.onStop?.();
  };
  private dir: string | undefined;
  /** The devices served, in this process or (--isolate) each in a child. */
  private readonly servers: { readonly name: string; close(): void }[] = [];
  /** Undo steps, run in reverse by cleanup(). */
  private readonly undo: (() => void)[] = [];

  /** If the process dies anyway (an uncaught error), the private folder still goes; QEMU exits with us. */
  private readonly onExit = (): void => this.cleanup();

  constructor(private readonly a: VmArgs) {
    // Installed first: a signal at any later moment stops the run cleanly.
    for (const s of STOP_SIGNALS) process.on(s, this.onSignal);
    process.on('exit', this.onExit);
  }

  say(line: string): void {
    process.stderr.write(`muser vm: ${line}\n`);
  }

  async go(): Promise<number> {
    const a = this.a;
    const cache = installedCache();
    const qemu = findQemu({ qemu: a.qemu, cache });
    const kernel = findKernel({ kernel: a.kernel, cache });
    const busybox = findBusybox(cache);
    checkShares(a.shares);
    const modules = guestModules(a, kernel);
    const accel = await this.chooseAccel(qemu, kernel.image, cache);
    if (this.signal) return this.stopped();

    this.dir = mkdtempSync(join(tmpdir(), 'muser-vm-'));
    for (const d of a.devices) d.socket = join(this.dir, d.socket);
    const interactive = a.run === undefined;
    // The terminal is the guest's console: a device that reads stdin (gpio's console) gets nothing.
    if (interactive) this.hideStdinFromDevices();
    if (a.isolate) {
      // Children never see the terminal (their stdin is closed); the parent holds the sockets.
      try {
        this.servers.push(...(await startIsolated({ verbose: a.verbose, devices: a.devices, isolate: true, watch: a.watch, watchdogMs: a.watchdogMs }, () => this.signal !== undefined)));
      } catch (e) {
        throw new VmError(`cannot start the isolated devices: ${a.verbose && e instanceof Error ? e.stack : (e as Error).message}`);
      }
    }
    for (const d of a.isolate ? [] : a.devices) {
      try {
        const spec = await loadDevice(d, a.verbose);
        const server = new Server(spec, d.socket, { log: a.verbose ? 'debug' : 'warn' });
        this.servers.push({ name: server.device.name, close: () => server.close() });
      } catch (e) {
        throw new VmError(`cannot start ${d.device}: ${a.verbose && e instanceof Error ? e.stack : (e as Error).message}`);
      }
      if (this.signal) return this.stopped();
    }
    if (this.signal) return this.stopped();

    const nonce = randomBytes(6).toString('hex');
    const initrd = join(this.dir, 'initramfs.cpio');
    const rows = interactive && process.stdout.isTTY ? process.stdout.rows : undefined;
    const cols = interactive && process.stdout.isTTY ? process.stdout.columns : undefined;
    writeInitramfs(initrd, {
      busybox,
      init: join(VM_ASSETS, 'init'),
      modules,
      config: guestConfig({ nonce, modules, shares: a.shares, workdir: guestWorkdir(a.shares), run: !interactive, rows, cols, term: interactive ? process.env.TERM || 'linux' : 'dumb' }),
      cmd: a.run,
    });
    const args = qemuArgs({
      accel, cpus: a.cpus, memoryMiB: a.memoryMiB, kernel: kernel.image, initrd,
      cmdline: kernelCmdline({ verbose: a.verbose, run: !interactive }),
      sockets: a.devices.map((d) => d.socket), shares: a.shares, interactive,
    });
    if (interactive || a.verbose) {
      const names = a.devices.map((d, i) => (isModulePath(d.device) ? `${this.servers[i]?.name} (${d.device})` : d.device) + (a.isolate ? ' isolated' : ''));
      this.say(`booting Linux ${kernel.version ?? kernel.image} under ${accel === 'kvm' ? 'KVM' : 'TCG'}${names.length ? ` with ${names.join(', ')}` : ''}${interactive ? '; Ctrl-A x stops the guest' : ''}`);
    }
    if (a.verbose) this.say(`qemu ${args.map((x) => (/^[\w,=.:/@+-]+$/.test(x) ? x : `'${x}'`)).join(' ')}`);
    return this.boot(qemu, args, nonce, interactive);
  }

  /** KVM when it works here, else TCG, said once. MUSER_VM_ACCEL=kvm|tcg skips the probe. */
  private async chooseAccel(qemu: Qemu, kernel: string, cache: string | undefined): Promise<'kvm' | 'tcg'> {
    const forced = process.env.MUSER_VM_ACCEL;
    if (forced === 'kvm' || forced === 'tcg') return forced;
    if (forced) throw new VmError(`MUSER_VM_ACCEL must be kvm or tcg, got ${forced}`);
    const probe = await kvmUsable(qemu, kernel, cache ?? setupCacheDir());
    if (probe.ok) return 'kvm';
    this.say(`KVM is not usable here (${probe.why}): running under TCG, slower`);
    return 'tcg';
  }

  /** Runs QEMU to its end; the exit code of the run. */
  private async boot(qemu: Qemu, args: string[], nonce: string, interactive: boolean): Promise<number> {
    const a = this.a;
    let stdin: 'ignore' | 'inherit' | number = interactive ? 'inherit' : 'ignore';
    if (interactive && isatty(0)) {
      // QEMU makes its stdin non-blocking and raw: give it a file description of
      // its own, so the shell's is untouched, and put the terminal back after.
      let tty: number;
      try {
        tty = openSync('/proc/self/fd/0', 'r+');
      } catch {
        tty = 0; // no /proc: share ours
      }
      if (tty !== 0) this.undo.push(() => closeSync(tty));
      const saved = spawnSync('stty', ['-g'], { stdio: [tty, 'pipe', 'ignore'], encoding: 'utf8' }).stdout?.trim();
      if (saved) this.undo.push(() => void spawnSync('stty', [saved], { stdio: [tty, 'ignore', 'ignore'] }));
      stdin = tty;
    }

    const log = new Tail(64 * 1024);
    const errors = new Tail(16 * 1024);
    let event: ConsoleEvent | undefined;
    let stdoutGone = false;
    const guestConsole = new GuestConsole(nonce, {
      log: (d) => {
        log.push(d);
        if (a.verbose) process.stderr.write(d);
      },
      guest: (d) => {
        log.push(d);
        if (!stdoutGone) process.stdout.write(d);
      },
      event: (e) => {
        if (e.kind !== 'begin') event ??= e;
      },
    });

    const child = spawn(qemu.command, [...qemu.prefix, ...args], { env: qemu.env, stdio: [stdin, 'pipe', 'pipe'] });
    // Whoever read our output left (`muser vm --run dmesg | head`): stop, as a SIGPIPE would.
    const onStdoutError = (): void => {
      stdoutGone = true;
      stopQemu(child);
    };
    process.stdout.on('error', onStdoutError);
    this.undo.push(() => process.stdout.off('error', onStdoutError));
    let kvmFailed = false;
    child.stdout!.on('data', (d: Buffer) => guestConsole.push(d));
    child.stderr!.on('data', (d: Buffer) => {
      errors.push(d);
      if (a.verbose) process.stderr.write(d);
      // KVM that fails mid-boot leaves QEMU paused forever.
      if (!kvmFailed && errors.text.includes('KVM internal error')) {
        kvmFailed = true;
        stopQemu(child);
      }
    });
    this.onStop = () => stopQemu(child);
    if (this.signal) stopQemu(child);
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    this.onStop = undefined;
    guestConsole.end();

    if (this.signal) return this.stopped();
    if (stdoutGone) return 128 + 13; // as if killed by SIGPIPE, quietly
    if (exit.error) throw new VmError(`cannot run QEMU (${qemu.where}): ${exit.error.message}`);
    const ended = event as ConsoleEvent | undefined;
    if (ended?.kind === 'end') return ended.status;
    if (ended?.kind === 'error') throw new VmError(ended.message);
    const showLog = (): string => (a.verbose ? '' : `\n${log.lines(25).map((l) => `  | ${l}`).join('\n')}`);
    if (kvmFailed) throw new VmError(`KVM failed while the guest ran (${errors.lines(1)[0] ?? ''}); MUSER_VM_ACCEL=tcg runs it under TCG`);
    const panic = /Kernel panic - not syncing:[^\r\n]*/.exec(log.text);
    if (panic) throw new VmError(`the guest kernel panicked: ${panic[0]}${guestConsole.phase === 'boot' ? showLog() : ''}`);
    // QEMU's last words, without the warning it prints for every vfio-user device.
    const qemuSaid = errors.lines(12).filter((l) => !/: warning: /.test(l)).slice(-5).map((l) => `\n  ${l}`).join('');
    if (exit.signal) throw new VmError(`QEMU died (${exit.signal})${qemuSaid}`);
    if (exit.code !== 0) throw new VmError(`QEMU failed (exit status ${exit.code})${qemuSaid}`);
    // Ctrl-A x, or poweroff / reboot typed in the shell: the user's way out.
    if (interactive && guestConsole.phase !== 'boot') return 0;
    throw new VmError(`the guest stopped before ${interactive ? 'its shell started' : 'the command finished'}${showLog()}`);
  }

  /** Exit code for a run a signal stopped. */
  private stopped(): number {
    this.say(`stopped by ${this.signal}`);
    return 128 + SIGNAL_NUMBER[this.signal!];
  }

  /** Devices created from now on read an empty stdin. */
  private hideStdinFromDevices(): void {
    const original = Object.getOwnPropertyDescriptor(process, 'stdin');
    const empty = Readable.from([]);
    Object.defineProperty(process, 'stdin', { configurable: true, enumerable: true, get: () => empty });
    this.undo.push(() => {
      if (original) Object.defineProperty(process, 'stdin', original);
    });
  }

  /** Stops whatever is still running and removes the private folder. */
  cleanup(): void {
    for (const s of this.servers.splice(0)) s.close();
    for (const undo of this.undo.splice(0).reverse()) {
      try {
        undo();
      } catch {
        // best effort: the rest must still run
      }
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
    for (const s of STOP_SIGNALS) process.off(s, this.onSignal);
    process.off('exit', this.onExit);
  }
}

/** SIGTERM (QEMU exits cleanly on it), then SIGKILL if it lingers. */
function stopQemu(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  setTimeout(() => child.kill('SIGKILL'), 3000).unref();
}
