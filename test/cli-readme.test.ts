// The README's one-command run, exactly as README.md writes it (read from
// the file, so README and behaviour cannot drift apart): it serves, the
// lspci command beside it works, and stopping it any way a user would
// (Ctrl-C at any moment, SIGTERM to npm or to muser) leaves no device
// process and no socket behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { until } from './helpers/wait.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const README_SOCKET = '/tmp/counter.sock';

/** The indented command lines of the README section "Run a device in one command". */
function readmeCommands(): { run: string; lspci: string } {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Run a device in one command'));
  assert.ok(section, 'README has the section');
  const lines = section
    .split('\n')
    .filter((l) => /^ {4}\S/.test(l))
    .map((l) => l.trim().replace(/\s+#.*$/, ''));
  const run = lines.find((l) => / run counter /.test(l));
  const lspci = lines.find((l) => / lspci /.test(l));
  assert.ok(run && lspci, `README section has a run and an lspci command: ${JSON.stringify(lines)}`);
  assert.ok(run.includes(README_SOCKET) && lspci.includes(README_SOCKET));
  return { run, lspci };
}

/**
 * The README command with its socket moved into a private directory: other
 * checkouts on this machine may run the same test at the same time.
 */
function inDir(command: string, dir: string): { command: string; socket: string } {
  const socket = join(dir, 'counter.sock');
  return { command: command.replaceAll(README_SOCKET, socket), socket };
}

/** Starts `command` through sh, as a user's shell would, in its own process group. */
function shell(command: string): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  // exec: the child's pid is npm's, as when a user types the line.
  const child = spawn('sh', ['-c', `exec ${command}`], { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

/** Pids of processes whose command line mentions `needle` (our private socket path). */
function processesWith(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) pids.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

/** Waits until nothing serves `socket` any more; asserts the socket is gone. */
async function assertGone(socket: string): Promise<void> {
  await until(() => processesWith(socket).length === 0, `no process serving ${socket}`, 20_000);
  assert.equal(existsSync(socket), false, 'the socket is removed');
}

test("README: the run command serves, its lspci command reads the device, SIGTERM to npm stops both", async () => {
  const { run, lspci } = readmeCommands();
  const dir = mkdtempSync(join(tmpdir(), 'muser-readme-'));
  try {
    const server = inDir(run, dir);
    const device = shell(server.command);
    await until(() => device.output().includes('muser: serving counter'), 'the device to serve', 20_000);
    const reader = shell(inDir(lspci, dir).command);
    assert.equal(await reader.exited, 0, reader.output());
    assert.match(reader.output(), /1af4:10ff/);
    device.child.kill('SIGTERM'); // npm itself, not the device
    await device.exited;
    await assertGone(server.socket);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('README: Ctrl-C at any moment of start-up or serving leaves nothing behind, and the next run works', async () => {
  const { run } = readmeCommands();
  const dir = mkdtempSync(join(tmpdir(), 'muser-readme-'));
  try {
    const server = inDir(run, dir);
    // Ctrl-C signals the terminal's whole foreground process group.
    for (const delay of [0, 100, 300, 600, 1000, 'served'] as const) {
      const device = shell(server.command);
      if (delay === 'served') await until(() => device.output().includes('muser: serving counter'), 'the device to serve', 20_000);
      else await new Promise((r) => setTimeout(r, delay));
      process.kill(-device.child.pid!, 'SIGINT');
      await device.exited;
      await assertGone(server.socket);
    }
    // And the next run starts, and a SIGTERM to the device itself stops it.
    const device = shell(server.command);
    await until(() => device.output().includes('muser: serving counter'), 'the device to serve again', 20_000);
    const [pid] = processesWith(server.socket).filter((p) => p !== device.child.pid);
    assert.ok(pid, 'the device process');
    process.kill(pid, 'SIGTERM');
    await device.exited;
    await assertGone(server.socket);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
