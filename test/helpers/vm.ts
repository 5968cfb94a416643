/**
 * For the tests that boot guests with `muser vm`: whether this machine can
 * (a QEMU with vfio-user-pci, a guest kernel and busybox, as `muser vm`
 * itself finds them), running it with a private TMPDIR, and what it left.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installedCache } from '../../src/cli/vm/cache.js';
import { findBusybox } from '../../src/cli/vm/guest.js';
import { findKernel } from '../../src/cli/vm/kernel.js';
import { findQemu } from '../../src/cli/vm/qemu.js';
import { MAIN } from './timer-process.js';

/**
 * Undefined when `muser vm` has what it needs here, else why not. In CI
 * (CI set) a missing QEMU is a failure, not a reason to skip: .ci/run runs
 * `muser vm setup` first.
 */
export function vmUnavailable(): string | undefined {
  try {
    const cache = installedCache();
    findQemu({ cache });
    findKernel({ cache });
    findBusybox(cache);
    return undefined;
  } catch (e) {
    const why = `muser vm cannot boot a guest here: ${(e as Error).message}`;
    if (process.env.CI) throw new Error(`${why} (in CI, .ci/run must run \`muser vm setup\` first)`);
    return why;
  }
}

/** A finished `muser vm` run. */
export interface VmResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A `muser vm` run in a child process whose TMPDIR is its own. */
export interface VmProcess {
  /** Its TMPDIR: the private folder muser vm makes goes in there. */
  tmp: string;
  pid: number;
  readonly stderr: string;
  done: Promise<VmResult>;
  kill(signal: NodeJS.Signals): void;
}

/** Starts `muser vm <args>` in `cwd`. */
export function startVm(args: string[], options: { cwd?: string } = {}): VmProcess {
  const tmp = mkdtempSync(join(tmpdir(), 'muser-vm-test-'));
  const child = spawn(process.execPath, [MAIN, 'vm', ...args], { cwd: options.cwd, env: { ...process.env, TMPDIR: tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<VmResult>((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
  return {
    tmp,
    pid: child.pid!,
    get stderr() {
      return stderr;
    },
    done,
    kill: (signal) => void child.kill(signal),
  };
}

/** PIDs of the processes whose command line mentions `text` (QEMU's holds the private folder's sockets). */
export function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'latin1').includes(text)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** What a run left behind: its private folders in `tmp`, and processes that still mention `tmp`. */
export function leftovers(tmp: string): string[] {
  return [...readdirSync(tmp).filter((f) => f.startsWith('muser-vm-')).map((f) => `${tmp}/${f}`), ...processesMentioning(tmp).map((pid) => `pid ${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0/g, ' ').slice(0, 200)}`)];
}

/** Waits for the run to end; what it printed, and what it left (then removes its TMPDIR). */
export async function finished(vm: VmProcess): Promise<VmResult & { left: string[] }> {
  const result = await vm.done;
  const left = leftovers(vm.tmp);
  rmSync(vm.tmp, { recursive: true, force: true });
  return { ...result, left };
}
