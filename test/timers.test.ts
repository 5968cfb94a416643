// Device timers (docs/guides/timers.md) through a real socket: the countdown
// fixture's timer is started by a register write and raises an interrupt
// when its time is up; a reset (client's, or the client leaving) cancels
// it; a migration stop pauses it (its time does not run while the device
// is stopped) and running again resumes it; the time left migrates in
// `state` and the destination's timer finishes the countdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deviceTimer, serve, type DeviceSpec, type Server } from '../src/index.js';
import { Client, EventFd } from '../src/client/index.js';
import { migrate, MigrationState, setMigrationState } from '../src/client/migrate.js';
import countdownDevice, { EXPIRED, REMAINING, START } from './fixtures/countdown.js';

const MSIX = 2;

interface Rig {
  spec: DeviceSpec;
  server: Server;
  client: Client;
  irq: EventFd;
}

async function rig(dir: string, name: string): Promise<Rig> {
  const spec = countdownDevice();
  const server = serve(spec, join(dir, `${name}.sock`), { log: 'silent' });
  const client = await Client.connect(server.path);
  const irq = new EventFd();
  await client.setIrqEventfds(MSIX, 0, [irq.fd]);
  return { spec, server, client, irq };
}

function close(...rigs: Rig[]): void {
  for (const r of rigs) {
    r.client.close();
    r.irq.close();
    r.server.close();
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

const read32 = async (c: Client, offset: number): Promise<number> => (await c.regionRead(0, offset, 4)).readUInt32LE(0);

test('a timer started by a register write raises the interrupt when its time is up', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-timers-'));
  const a = await rig(dir, 'a');
  try {
    const started = performance.now();
    await a.client.regionWrite(0, START, u32(100));
    const left = await read32(a.client, REMAINING);
    assert.ok(left > 0 && left <= 100, `remaining ${left}`);
    assert.equal(a.spec.state!.countdownMs, 100, 'state holds the countdown while it runs');
    await a.irq.waitFor(1);
    assert.ok(performance.now() - started >= 99, `fired after ${performance.now() - started} ms`);
    assert.equal(await read32(a.client, EXPIRED), 1);
    assert.equal(await read32(a.client, REMAINING), 0);
    assert.equal(a.spec.state!.countdownMs, null);
    await a.client.regionWrite(0, EXPIRED, u32(1));
    assert.equal(await read32(a.client, EXPIRED), 0);
  } finally {
    close(a);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a reset cancels the timer, and so does the client leaving', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-timers-'));
  const a = await rig(dir, 'a');
  try {
    const timer = a.spec.timers![0];
    await a.client.regionWrite(0, START, u32(50));
    await a.client.reset();
    assert.equal(timer.active, false);
    assert.equal(await read32(a.client, REMAINING), 0);
    // Had the first countdown survived, it would have fired long before this one.
    await a.client.setIrqEventfds(MSIX, 0, [a.irq.fd]); // a reset drops the IRQ setup; the client sends it again
    await a.client.regionWrite(0, START, u32(150));
    await a.irq.waitFor(1);
    assert.equal(a.irq.total, 1);

    await a.client.regionWrite(0, START, u32(10_000));
    assert.equal(timer.active, true);
    const left = new Promise((resolve) => a.server.once('disconnect', resolve));
    a.client.close();
    await left;
    assert.equal(timer.active, false);
    assert.equal(a.spec.state!.countdownMs, null);
  } finally {
    close(a);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a migration stop pauses the timer: its time does not run until the device runs again', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-timers-'));
  const a = await rig(dir, 'a');
  const clock = await rig(dir, 'clock');
  try {
    const timer = a.spec.timers![0];
    await a.client.regionWrite(0, START, u32(100));
    await setMigrationState(a.client, MigrationState.STOP);
    assert.equal(timer.paused, true);
    const frozen = timer.remainingMs!;
    assert.ok(frozen > 0 && frozen <= 100, `left ${frozen}`);
    assert.equal(a.spec.state!.countdownMs, frozen, 'state holds the time left while stopped');
    // Another device counts 250 ms meanwhile: the stopped one's time stands still.
    await clock.client.regionWrite(0, START, u32(250));
    await clock.irq.waitFor(1);
    assert.equal(a.irq.total, 0);
    assert.equal(timer.remainingMs, frozen);
    assert.equal(await read32(a.client, REMAINING), Math.ceil(frozen));

    const resumed = performance.now();
    await setMigrationState(a.client, MigrationState.RUNNING);
    assert.equal(timer.paused, false);
    await a.irq.waitFor(1);
    assert.ok(performance.now() - resumed >= frozen - 2, `fired ${performance.now() - resumed} ms after resuming, ${frozen} ms were left`);
    assert.equal(a.irq.total, 1);
  } finally {
    close(a, clock);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the time left migrates in state: the destination finishes the countdown', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-timers-'));
  const source = await rig(dir, 'source');
  const destination = await rig(dir, 'destination');
  try {
    const started = performance.now();
    await source.client.regionWrite(0, START, u32(300));
    await migrate(source.client, destination.client);
    const moved = destination.spec.timers![0];
    assert.equal(moved.active, true, 'the destination runs the countdown');
    assert.ok(moved.remainingMs! > 0 && moved.remainingMs! <= 300, `left ${moved.remainingMs}`);
    await destination.irq.waitFor(1);
    assert.ok(performance.now() - started >= 299, `fired ${performance.now() - started} ms after the start`);
    assert.equal(await read32(destination.client, EXPIRED), 1);
    assert.equal(source.irq.total, 0, 'the stopped source never fires');
    assert.equal(source.spec.timers![0].paused, true);
  } finally {
    close(source, destination);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('timers refuse bad input, serve one device, and keep a device without a stateKey from the default migration', async () => {
  assert.throws(() => deviceTimer({} as never), /onExpire must be a function/);
  assert.throws(() => deviceTimer({ onExpire: () => undefined, stateKey: '' }), /stateKey must be a non-empty string/);
  const timer = deviceTimer({ name: 'tick', onExpire: () => undefined });
  assert.throws(() => timer.start(10), /tick.start: the timer serves no device; list it in the spec's timers/);
  const dir = mkdtempSync(join(tmpdir(), 'muser-timers-'));
  const identity = { vendorId: 0x1234, deviceId: 0x0031 };
  const server = serve({ identity, state: {}, timers: [timer] }, join(dir, 't.sock'), { log: 'silent' });
  try {
    assert.throws(() => timer.start(-1), /tick.start: ms must be a finite number of milliseconds >= 0, got -1/);
    assert.throws(() => timer.start(NaN), RangeError);
    assert.throws(() => serve({ identity, timers: [timer] }, join(dir, 'u.sock')), /tick: already serves device/);
    assert.throws(() => serve({ identity, timers: [{}] as never }, join(dir, 'v.sock')), /timers\[0\]: must be a timer from deviceTimer\(\)/);
    assert.match(server.migration.unavailable ?? '', /timer tick keeps its time outside `state`: give it a stateKey/);
  } finally {
    server.close();
  }
  // Disposed with its device, the timer may serve another.
  const again = serve({ identity, timers: [timer], migration: {} }, join(dir, 'w.sock'), { log: 'silent' });
  assert.equal(again.migration.unavailable, undefined, 'migration: {} opts into the default');
  again.close();
  rmSync(dir, { recursive: true, force: true });
});
