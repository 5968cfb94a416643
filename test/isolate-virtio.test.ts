// virtio-blk under --isolate: the child serving it dies at any moment (or
// at a named point of the take/publish sequence) while requests are in
// flight; its successor finishes them from the inflight log: every request
// completes exactly once, with the right data, and the connection stays in sync.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../src/client/index.js';
import { IsolatedServer } from '../src/isolate/index.js';
import { CHILD_ENTRY, quiet, tempDir, until } from './helpers/isolated.js';
import { VirtioDriver } from './helpers/virtio-driver.js';
import { BlkWorkload } from './helpers/blk-workload.js';

const DISK = 8 * 1024 * 1024;

interface Rig {
  server: IsolatedServer;
  client: Client;
  d: VirtioDriver;
  image: string;
  marker: string;
  close(): void;
}

/** An isolated virtio-blk over an image file, a driver with queue 0 running; `crashAt` arms MUSER_CRASH_AT in the first children. */
async function rig(dir: string, o: { crashAt?: string; device?: string; options?: Record<string, string> } = {}): Promise<Rig> {
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(0));
  writeFileSync(image, Buffer.alloc(DISK));
  const marker = join(dir, 'crashed');
  const env = o.crashAt ? { ...process.env, MUSER_CRASH_AT: `${o.crashAt}:${marker}` } : undefined;
  const server = await IsolatedServer.start({ device: o.device ?? 'virtio-blk', options: o.options ?? { image } }, join(dir, 'blk.sock'), { entry: CHILD_ENTRY, log: quiet, env });
  await server.standby();
  const client = await Client.connect(server.path);
  const d = await VirtioDriver.open(client, { memorySize: 16 * 1024 * 1024 });
  await d.start(1);
  return {
    server,
    client,
    d,
    image,
    marker,
    close() {
      client.close();
      d.close();
      server.close();
    },
  };
}


/** Runs the workload until `until()` holds and `after` more requests completed, then drains it; checks everything. */
async function runUntil(r: Rig, w: BlkWorkload, until: () => boolean, after = 30, limit = 2000): Promise<void> {
  let more = after;
  for (let i = 0; more > 0; i++) {
    if (i > limit) throw new Error(`still not there after ${limit} rounds`);
    await w.fill();
    const n = await w.next();
    if (until()) more -= n;
  }
  await w.drain();
  w.checkExactlyOnce();
  assert.ok(readFileSync(r.image).subarray(0, w.model.length).equals(w.model), 'the image holds what was written');
}

test('isolate virtio-blk: a death at each point of the take and publish sequence loses, repeats and corrupts nothing', { concurrency: 4 }, async (t) => {
  // Depth 1: the publish the process died in is the last one, no later one covers for it.
  const points = [['take', 8], ['taken', 8], ['elements', 1], ['elements@5', 8], ['intent', 8], ['clearing@4', 8], ['index', 1], ['index@5', 8]] as const;
  await Promise.all(points.map(([point, depth]) => t.test(`'${point}', ${depth} in flight`, async () => {
    const dir = tempDir();
    const r = await rig(dir, { crashAt: point });
    try {
      const w = new BlkWorkload(r.d, { blocks: 1024, depth, maxBlocks: 32, kicks: ['message', 'posted', 'eventfd'] });
      await runUntil(r, w, () => existsSync(r.marker));
      assert.equal(readFileSync(r.marker, 'utf8'), point.replace(/@.*/, ''));
      assert.equal(r.server.restarts, 1);
    } finally {
      r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  })));
});

test('isolate virtio-blk: smoke', async () => {
  const dir = tempDir();
  const r = await rig(dir);
  try {
    const w = new BlkWorkload(r.d, { blocks: 1024, depth: 8, maxBlocks: 256, bigEvery: 5 });
    for (let i = 0; i < 20; i++) {
      await w.fill();
      await w.next();
    }
    await r.server.standby();
    process.kill(r.server.childPid!, 'SIGKILL');
    for (let i = 0; i < 20; i++) {
      await w.fill();
      await w.next();
    }
    await w.drain();
    w.checkExactlyOnce();
    assert.ok(readFileSync(r.image).subarray(0, w.model.length).equals(w.model));
  } finally {
    r.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
