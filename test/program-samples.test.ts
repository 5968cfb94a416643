// Devices in Python: the package's own unit tests, and the samples in
// python/examples served by `muser run` (real processes: muser, and the
// Python program it starts) and driven through muser's TypeScript client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, EventFd, migrate, privateMemory, sharedMemory, type GuestMemory } from '../src/client/index.js';
import { MAIN, runCli, startServer, type ChildServer } from './helpers/timer-process.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const PVPANIC = join(REPO, 'python/examples/pvpanic.py');
const EDU = join(REPO, 'python/examples/edu.py');
const IRQ_INTX = 0;
const CONFIG = 7;
const PVPANIC_PANICKED = 1;
const PVPANIC_CRASH_LOADED = 2;

/** `muser run <file> <sock> [-v]` until it serves. */
function serveProgram(file: string, sock: string, extra: string[] = []): Promise<ChildServer> {
  return startServer([MAIN, 'run', file, sock, ...extra], sock, `on ${sock}`, `muser run ${file}`);
}

/** Polls `condition` every 20 ms for up to 5 s. */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function u64(v: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

test("the Python package's own unit tests pass (python3 -m unittest)", () => {
  const r = spawnSync('python3', ['-W', 'error::ResourceWarning', '-m', 'unittest', 'discover', '-s', 'tests'], { cwd: join(REPO, 'python'), encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `python3 -m unittest failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, /Ran \d+ tests/);
});

/** The README's section "Devices in Python": its Python block and its one command. */
function readmePython(): { code: string; args: string[] } {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Devices in Python'));
  assert.ok(section, 'README has the section');
  const code = /```python\n([\s\S]*?)```/.exec(section)?.[1];
  const command = section.split('\n').find((l) => /^ {4}npm run muser -- run /.test(l));
  assert.ok(code && command, 'the section has a Python block and a command');
  return { code, args: command.trim().split(/\s+/).slice(4) };
}

test('pvpanic.py, as the README shows and serves it: 1b36:0011, reads give PANICKED|CRASH_LOADED, a write of PANICKED logs "guest panicked", muser check passes', async () => {
  const readme = readmePython();
  assert.equal(readme.code, readFileSync(PVPANIC, 'utf8'), 'the README shows the whole of python/examples/pvpanic.py');
  assert.deepEqual(readme.args, ['run', 'python/examples/pvpanic.py', '/tmp/pvpanic.sock']);
  const dir = mkdtempSync(join(tmpdir(), 'muser-py-'));
  const sock = join(dir, 'pvpanic.sock');
  // The README's command, run from the checkout, its socket in a private directory.
  const server = await startServer([MAIN, 'run', readme.args[1], sock], sock, `on ${sock}`, 'the README command', REPO);
  try {
    assert.match(server.stderr, /serving pvpanic from .*pvpanic\.py on /);
    const client = await Client.connect(sock);
    const id = await client.regionRead(CONFIG, 0, 4);
    assert.deepEqual([id.readUInt16LE(0), id.readUInt16LE(2)], [0x1b36, 0x0011]);
    assert.equal((await client.regionRead(CONFIG, 0x0b, 1))[0], 0x08, 'class: system peripheral');
    assert.equal((await client.regionInfo(0)).info.size, 16);
    assert.equal((await client.regionRead(0, 0, 1))[0], PVPANIC_PANICKED | PVPANIC_CRASH_LOADED);
    assert.doesNotMatch(server.stderr, /guest panicked/);
    await client.regionWrite(0, 0, Buffer.from([PVPANIC_PANICKED]));
    await until(() => server.stderr.includes('[pvpanic] info: guest panicked'), 'the panic in the log');
    assert.equal((await client.regionRead(0, 0, 1))[0], 3, 'reads still give the supported events');
    client.close();
    const checked = await runCli(['check', sock]);
    assert.equal(checked.code, 0, `muser check failed:\n${checked.stdout}${checked.stderr}`);
    assert.match(checked.stdout, /PASS/);
    assert.doesNotMatch(checked.stdout, /FAIL/);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * edu's DMA engine both ways and its DMA interrupt: 4 KiB from guest memory
 * to the device's buffer, then back to another address.
 */
async function eduDmaRoundTrip(client: Client, memory: GuestMemory, irq: EventFd): Promise<void> {
  const pattern = Buffer.alloc(4096);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
  memory.bytes.set(pattern, 0x1000);
  memory.bytes.fill(0, 0x3000, 0x4000);
  await client.dmaMap(0x10_0000, memory);
  await client.setBusMaster();
  const run = async (src: number, dst: number, cmd: number, interrupts: number): Promise<void> => {
    await client.regionWrite(0, 0x80, u64(src));
    await client.regionWrite(0, 0x88, u64(dst));
    await client.regionWrite(0, 0x90, u64(4096));
    await client.regionWrite(0, 0x98, u64(cmd));
    assert.equal(await irq.waitFor(interrupts), interrupts);
    assert.equal((await client.regionRead(0, 0x24, 4)).readUInt32LE(0), 0x100, 'interrupt status: DMA done');
    assert.equal((await client.regionRead(0, 0x98, 8)).readBigUInt64LE(0), BigInt(cmd & ~1), 'the start bit clears when done');
    await client.regionWrite(0, 0x64, Buffer.from([0, 1, 0, 0])); // acknowledge
    await client.maskIrqs(IRQ_INTX, 0, 1, false); // INTx is masked by the kernel after each interrupt
  };
  await run(0x10_1000, 0x40000, 0x1 | 0x4, 1); // guest memory to the buffer
  await run(0x40000, 0x10_3000, 0x1 | 0x2 | 0x4, 2); // and back
  assert.deepEqual(Buffer.from(memory.bytes.subarray(0x3000, 0x4000)), pattern);
}

test('edu.py: the DMA engine and its interrupt, zero-copy where the client shares memory and through muser where not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-py-'));
  const sock = join(dir, 'edu.sock');
  const server = await serveProgram(EDU, sock, ['-v']);
  try {
    for (const [memory, how] of [[sharedMemory(1 << 20), 'mapped'], [privateMemory(1 << 20), 'through muser']] as const) {
      const client = await Client.connect(sock);
      const irq = new EventFd();
      try {
        assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 0x010000ed, 'id');
        await client.regionWrite(0, 0x04, Buffer.from([0x0f, 0, 0, 0]));
        assert.equal((await client.regionRead(0, 0x04, 4)).readUInt32LE(0), 0xfffffff0, 'liveness: the inverse');
        await client.regionWrite(0, 0x08, Buffer.from([10, 0, 0, 0]));
        assert.equal((await client.regionRead(0, 0x08, 4)).readUInt32LE(0), 3628800, '10!');
        await client.setIrqEventfds(IRQ_INTX, 0, [irq.fd]);
        await eduDmaRoundTrip(client, memory, irq);
        assert.match(server.stderr, new RegExp(`dma 4096 bytes from 0x101000 to the buffer \\(${how}\\)`));
        assert.match(server.stderr, new RegExp(`dma 4096 bytes from the buffer to 0x103000 \\(${how}\\)`));
      } finally {
        client.close();
        irq.close();
        memory.close();
      }
    }
    const checked = await runCli(['check', sock]);
    assert.equal(checked.code, 0, `muser check failed:\n${checked.stdout}${checked.stderr}`);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("edu.py live-migrates: the program's state and the registers muser stores arrive in a second muser process", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-py-'));
  const socks = [join(dir, 'src.sock'), join(dir, 'dst.sock')];
  const servers = await Promise.all(socks.map((s) => serveProgram(EDU, s)));
  const memory = sharedMemory(1 << 20);
  const irq = new EventFd();
  const [source, destination] = await Promise.all(socks.map((s) => Client.connect(s)));
  try {
    await source.setIrqEventfds(IRQ_INTX, 0, [irq.fd]);
    await eduDmaRoundTrip(source, memory, irq); // the buffer now holds the pattern
    await source.regionWrite(0, 0x08, Buffer.from([12, 0, 0, 0]));
    await source.regionWrite(0, 0x04, Buffer.from([0x55, 0, 0, 0]));
    await destination.dmaMap(0x10_0000, memory);
    await destination.setBusMaster();
    await migrate(source, destination);
    assert.equal((await destination.regionRead(0, 0x08, 4)).readUInt32LE(0), 479001600, '12! migrated');
    assert.equal((await destination.regionRead(0, 0x04, 4)).readUInt32LE(0), ~0x55 >>> 0, 'liveness migrated');
    // The buffer migrated too: copy it out on the destination.
    memory.bytes.fill(0, 0x5000, 0x6000);
    await destination.regionWrite(0, 0x80, u64(0x40000));
    await destination.regionWrite(0, 0x88, u64(0x10_5000));
    await destination.regionWrite(0, 0x90, u64(4096));
    await destination.regionWrite(0, 0x98, u64(0x1 | 0x2));
    await until(() => memory.bytes[0x5000 + 1] !== 0, 'the DMA on the destination');
    assert.deepEqual(Buffer.from(memory.bytes.subarray(0x5000, 0x6000)), Buffer.from(memory.bytes.subarray(0x1000, 0x2000)));
  } finally {
    source.close();
    destination.close();
    irq.close();
    memory.close();
    await Promise.all(servers.map((s) => s.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
});
