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
import { alive, CHILD_ENTRY, quiet, tempDir, until } from './helpers/isolated.js';
import { T_OUT, T_IN } from './helpers/virtio-blk-driver.js';
import { VirtioDriver, type KickMode } from './helpers/virtio-driver.js';
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
async function runUntil(r: Rig, w: BlkWorkload, until: () => boolean, after = 15, limit = 2000): Promise<void> {
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
  const points = [['take', 8], ['taken', 8], ['elements', 1], ['intent', 8], ['clearing@4', 8], ['index', 1], ['index@5', 8]] as const;
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

/**
 * A virtio-blk device file over the image whose backend dies at requests
 * starting at trap offsets (once each: a marker file per trap), and whose
 * writes at 'slow' traps wait `slowMs`.
 */
function trapDevice(dir: string, image: string, traps: Record<number, string>, slowMs = 0): string {
  const file = join(dir, 'trap-blk.mjs');
  const muser = new URL('../src/index.js', import.meta.url).href;
  writeFileSync(
    file,
    `import { existsSync, writeFileSync } from 'node:fs';
import { virtioBlk, openFileBackend } from ${JSON.stringify(muser)};
const traps = ${JSON.stringify(traps)};
const die = (name) => {
  const marker = ${JSON.stringify(join(dir, 'trap-'))} + name;
  if (existsSync(marker)) return;
  writeFileSync(marker, '');
  process.kill(process.pid, 'SIGKILL');
};
export default async function () {
  const disk = await openFileBackend(${JSON.stringify(image)});
  const backend = {
    size: disk.size, readOnly: false, capabilities: disk.capabilities,
    read(offset, bufs) {
      const t = traps[offset];
      // All the data in guest memory, the status byte not yet.
      if (t === 'read-data') return Promise.resolve(disk.read(offset, bufs)).then(() => die(t));
      // The first descriptor's data only.
      if (t === 'read-segment') return Promise.resolve(disk.read(offset, bufs.slice(0, 1))).then(() => { die(t); return disk.read(offset + bufs[0].length, bufs.slice(1)); });
      return disk.read(offset, bufs);
    },
    write(offset, bufs, o) {
      const t = traps[offset];
      if (t === 'write-data') return Promise.resolve(disk.write(offset, bufs, o)).then(() => die(t));
      if (t === 'write-segment') return Promise.resolve(disk.write(offset, bufs.slice(0, 1), o)).then(() => { die(t); return disk.write(offset + bufs[0].length, bufs.slice(1), o); });
      if (t === 'slow') return new Promise((r) => setTimeout(r, ${slowMs})).then(() => disk.write(offset, bufs, o));
      return disk.write(offset, bufs, o);
    },
    flush: () => disk.flush(),
    discard: (o, l) => disk.discard(o, l),
    writeZeroes: (o, l, x) => disk.writeZeroes(o, l, x),
    close: () => disk.close(),
  };
  return virtioBlk({ backend, name: 'trap-blk' });
}
`,
  );
  return file;
}

const BLOCK = 4096;

test('isolate virtio-blk: a death between data and status byte, or between two descriptors, of a read or a write', async () => {
  const dir = tempDir();
  // Requests of 64 blocks (4 descriptors of 64 KiB) at these blocks die once each.
  const at = { 'read-data': 100, 'read-segment': 300, 'write-data': 500, 'write-segment': 700 };
  const image = join(dir, 'disk.img');
  const traps = Object.fromEntries(Object.entries(at).map(([name, block]) => [block * BLOCK, name]));
  const r = await rig(dir, { device: trapDevice(dir, image, traps), options: {} });
  try {
    const w = new BlkWorkload(r.d, { blocks: 1024, depth: 8, maxBlocks: 66 });
    // Known contents around each trap (a write starting a block earlier is not trapped).
    for (const block of Object.values(at)) w.post(T_OUT, block - 1, 66);
    await r.d.kick(0);
    await w.drain();
    let restarts = 0;
    for (const [name, block] of Object.entries(at)) {
      await r.server.standby();
      // A request beside it on the way, too.
      w.post(T_OUT, block + 100, 8);
      w.post(name.startsWith('read') ? T_IN : T_OUT, block, 64);
      await r.d.kick(0);
      await w.drain();
      assert.ok(existsSync(join(dir, `trap-${name}`)), `${name}: the trap was reached`);
      assert.equal(r.server.restarts, ++restarts, `${name}: the child died there`);
    }
    w.checkExactlyOnce();
    assert.ok(readFileSync(image).subarray(0, w.model.length).equals(w.model), 'the image holds what was written');
  } finally {
    r.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate virtio-blk: a death half-way through a device reset; the driver sets the device up again', async () => {
  const dir = tempDir();
  const r = await rig(dir, { crashAt: 'clear' });
  try {
    const w = new BlkWorkload(r.d, { blocks: 1024, depth: 8, maxBlocks: 32 });
    for (let i = 0; i < 10; i++) {
      await w.fill();
      await w.next();
    }
    await w.drain();
    // status <- 0 dies while it clears the log; its successor serves the write again.
    await r.d.start(1);
    assert.equal(readFileSync(r.marker, 'utf8'), 'clear');
    assert.equal(r.server.restarts, 1);
    for (let i = 0; i < 10; i++) {
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

test('isolate virtio-blk: the successor serves the doorbell eventfds the client holds, with what was written while nobody watched', async () => {
  const dir = tempDir();
  const r = await rig(dir);
  try {
    const w = new BlkWorkload(r.d, { blocks: 256, depth: 4, maxBlocks: 8, kicks: ['eventfd'] });
    await w.fill();
    await w.drain();
    const doorbells = r.d.doorbells;
    for (let kill = 1; kill <= 2; kill++) {
      await r.server.standby();
      const pid = r.server.childPid!;
      process.kill(pid, 'SIGKILL');
      await until(() => !alive(pid), 2000, 'the child to die');
      // Rung while no child watches.
      await w.fill('eventfd');
      await w.drain();
      // And rung once the successor serves: only the eventfd the client holds tells it.
      for (let i = 0; i < 5; i++) {
        await w.fill('eventfd');
        await w.drain();
      }
    }
    assert.equal(r.d.doorbells, doorbells, 'the client never asked for doorbells again');
    assert.equal(r.server.restarts, 2);
    w.checkExactlyOnce();
  } finally {
    r.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate virtio-blk: a reload waits for the requests in the backend; each completes once', async () => {
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  const SLOW = 900;
  const r = await rig(dir, { device: trapDevice(dir, image, { [SLOW * BLOCK]: 'slow' }, 1000), options: {} });
  try {
    const w = new BlkWorkload(r.d, { blocks: 1024, depth: 8, maxBlocks: 16, kicks: ['message', 'eventfd'] });
    await w.fill('eventfd');
    await w.next();
    // A write the backend takes a second for, and others beside it.
    const slow = w.post(T_OUT, SLOW, 4);
    await w.fill();
    const pid = r.server.childPid;
    const started = performance.now();
    await r.server.reload();
    assert.notEqual(r.server.childPid, pid);
    // The old child finished it before handing over: nothing was left for the new one to execute again.
    w.reap();
    assert.equal(w.completions.get(slow.id), 1, `the slow write completed before the reload did (${(performance.now() - started).toFixed(0)} ms)`);
    for (let i = 0; i < 10; i++) {
      await w.fill();
      await w.next();
    }
    await w.drain();
    w.checkExactlyOnce();
    assert.ok(readFileSync(image).subarray(0, w.model.length).equals(w.model));
  } finally {
    r.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate virtio-blk: queues on a worker thread keep their inflight log there (a death mid-publish, then SIGKILLs)', async () => {
  const dir = tempDir();
  const image = join(dir, 'disk.img');
  const r = await rig(dir, { crashAt: 'clearing@6', options: { image, workers: '1' } });
  try {
    const w = new BlkWorkload(r.d, { blocks: 1024, depth: 8, maxBlocks: 64, bigEvery: 9, kicks: ['message', 'eventfd'] });
    await runUntil(r, w, () => existsSync(r.marker), 20);
    assert.equal(r.server.restarts, 1, 'the worker thread reached the crash point');
    for (let kill = 2; kill <= 3; kill++) {
      await r.server.standby();
      await w.fill();
      process.kill(r.server.childPid!, 'SIGKILL');
      await runUntil(r, w, () => true, 10);
      assert.equal(r.server.restarts, kill);
    }
  } finally {
    r.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isolate virtio-blk: 20 SIGKILLs at random moments, mid-message, during 1 MiB requests and device resets: nothing lost, repeated or corrupted', async () => {
  const dir = tempDir();
  const r = await rig(dir);
  const kills: { at: number; kind: string; firstMs?: number }[] = [];
  let failure: unknown;
  let stop = false;
  let resetWanted = false;
  let resetting = false;
  // Doorbells by ioeventfd, except while the killer aims at a message.
  let kickBy: KickMode = 'eventfd';
  try {
    const w = new BlkWorkload(r.d, { blocks: 2048, depth: 8, maxBlocks: 256, bigEvery: 6, seed: 11 });
    w.onComplete = (_p, at) => {
      const k = kills.at(-1);
      if (k && k.firstMs === undefined && at > k.at) k.firstMs = at - k.at;
    };
    await w.fill('eventfd');
    await w.drain();
    const driver = (async () => {
      while (!stop) {
        if (resetWanted) {
          // As a driver does: nothing in flight, then status <- 0 and the setup again.
          await w.drain();
          resetting = true;
          await r.d.start(1);
          resetting = resetWanted = false;
          continue;
        }
        await w.fill(kickBy);
        await w.next();
        // Leave the machine's cores some room: the spare child loads meanwhile.
        await new Promise((res) => setTimeout(res, 1));
      }
      await w.drain();
    })().catch((e: unknown) => {
      failure = e;
    });
    const ok = (): boolean => {
      if (failure) throw failure as Error;
      return true;
    };
    /** Spins (the event loop turning) until `cond`, at most `ms`; false when it never held. */
    const spin = async (cond: () => boolean, ms: number): Promise<boolean> => {
      const end = performance.now() + ms;
      while (!(ok() && cond())) {
        if (performance.now() > end) return false;
        await new Promise((res) => setImmediate(res));
      }
      return true;
    };
    /** The child holds a message it read (in the journal) and has not answered. */
    const midMessage = (): boolean => r.server.unansweredBytes > 0;
    let seed = 5;
    const rand = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
    for (let k = 0; k < 20; k++) {
      await r.server.standby();
      let kind = ['random', 'big', 'message', 'reset'][k % 4];
      if (kind === 'big') await until(() => ok() && w.bigInFlight(256), 5000, 'a 1 MiB request in flight');
      else if (kind === 'message') {
        kickBy = 'message';
        if (!(await spin(midMessage, 2000))) kind = 'message (between messages)';
      } else if (kind === 'reset') {
        resetWanted = true;
        await until(() => ok() && resetting, 5000, 'the driver to reset the device');
        await new Promise((res) => setTimeout(res, rand(3)));
        if (!(await spin(midMessage, 2000))) kind = 'reset (between messages)';
      } else await new Promise((res) => setTimeout(res, 1 + rand(30)));
      ok();
      kills.push({ at: performance.now(), kind });
      process.kill(r.server.childPid!, 'SIGKILL');
      kickBy = 'eventfd';
      await until(() => ok() && r.server.restarts === k + 1, 5000, `restart ${k + 1}`);
    }
    // Some more after the last one.
    await until(() => ok() && w.posted > 0 && kills.at(-1)!.firstMs !== undefined, 5000, 'a completion after the last kill');
    stop = true;
    await driver;
    ok();
    w.checkExactlyOnce();
    assert.ok(readFileSync(r.image).subarray(0, w.model.length).equals(w.model), 'the image holds what was written');
    // The connection is in sync: a plain register read answers right.
    assert.equal(await r.d.readCommon(0x12, 2), 1, 'num_queues');
    const midMessages = kills.filter((k) => k.kind === 'message' || k.kind === 'reset').length;
    assert.ok(midMessages >= 5, `${midMessages} kills mid-message`);
    const ms = kills.flatMap((k) => (k.firstMs === undefined ? [] : [k.firstMs])).sort((a, b) => a - b);
    process.stderr.write(
      `isolate virtio-blk: ${w.posted} requests, ${kills.length} kills (${midMessages} mid-message); SIGKILL to the next completion: median ${ms[ms.length >> 1].toFixed(1)} ms, max ${ms.at(-1)!.toFixed(1)} ms (${ms.length} measured)\n`,
    );
  } finally {
    stop = true;
    r.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
