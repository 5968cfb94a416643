/**
 * The virtio-rng sample: in-process, in a child process, and as
 * `muser run virtio-rng`, with our client as the driver.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { serve } from '../src/index.js';
import { virtioRng } from '../src/samples/virtio-rng.js';
import { connectClient } from './helpers/raw.js';
import { VirtioDriver } from './helpers/virtio-driver.js';
import { VirtioProcess } from './helpers/virtio-process.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-vrng-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Reads `n` bytes from the device in `parts` buffers; returns them and the used length. */
async function entropy(d: VirtioDriver, n: number, parts = 1, options: { indirect?: boolean; kick?: 'message' | 'posted' | 'eventfd' } = {}): Promise<{ bytes: Buffer; len: number }> {
  const size = Math.ceil(n / parts);
  const bufs = Array.from({ length: parts }, () => ({ addr: d.alloc(size), len: size, write: true }));
  for (const b of bufs) d.bytes(b.addr, b.len).fill(0);
  const used = await d.roundTrip(0, bufs, options);
  return { bytes: Buffer.concat(bufs.map((b) => Buffer.from(d.bytes(b.addr, b.len)))), len: used.len };
}

function looksRandom(b: Buffer): boolean {
  const counts = new Map<number, number>();
  for (const x of b) counts.set(x, (counts.get(x) ?? 0) + 1);
  // 4 KiB of random bytes use far more than 100 distinct values and are not all zero.
  return counts.size > 100 && b.some((x) => x !== 0);
}

async function exercise(path: string): Promise<void> {
  const client = await connectClient(path);
  const d = await VirtioDriver.open(client);
  try {
    const f = await d.start(1);
    assert.equal(f & 0xffffffn, 0n, 'no device-specific features');
    const a = await entropy(d, 4096, 3);
    assert.equal(a.len, 3 * Math.ceil(4096 / 3));
    assert.ok(looksRandom(a.bytes));
    const b = await entropy(d, 4096, 1, { indirect: true, kick: 'eventfd' });
    assert.equal(b.len, 4096);
    assert.notDeepEqual(a.bytes.subarray(0, 64), b.bytes.subarray(0, 64));
  } finally {
    d.close();
    client.close();
  }
}

describe('virtio-rng', () => {
  test('in-process: fills device-writable buffers with random bytes', async () => {
    const server = serve(virtioRng(), join(dir, 'rng.sock'), { log: 'silent' });
    try {
      await exercise(server.path);
      // Fd-less guest memory: the bytes arrive by DMA_WRITE messages.
      const client = await connectClient(server.path);
      const d = await VirtioDriver.open(client, { memory: 'private' });
      try {
        await d.start(1);
        const r = await entropy(d, 4096, 2);
        assert.equal(r.len, 4096);
        assert.ok(looksRandom(r.bytes));
        assert.ok(client.dmaRequestsServed > 0);
      } finally {
        d.close();
        client.close();
      }
    } finally {
      server.close();
    }
  });

  test('a request bigger than 64 KiB gets 64 KiB', async () => {
    const server = serve(virtioRng(), join(dir, 'rng-big.sock'), { log: 'silent' });
    const client = await connectClient(server.path);
    const d = await VirtioDriver.open(client);
    try {
      await d.start(1);
      const r = await entropy(d, 128 * 1024, 1);
      assert.equal(r.len, 64 * 1024);
      assert.ok(r.bytes.subarray(64 * 1024).every((x) => x === 0), 'nothing written past what used.len says');
    } finally {
      d.close();
      client.close();
      server.close();
    }
  });

  test('in a child process', async () => {
    const p = await VirtioProcess.start('rng');
    try {
      await exercise(p.path);
      assert.ok(p.alive);
    } finally {
      await p.stop();
    }
  });

  test('`muser run virtio-rng <socket>` serves it until SIGTERM', async () => {
    const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const path = join(dir, 'cli-rng.sock');
    const child = spawn(process.execPath, [main, 'run', 'virtio-rng', path], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('serving')) resolve();
      });
      child.on('exit', () => reject(new Error(`exited early: ${stderr}`)));
    });
    try {
      await exercise(path);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
  });
});
