/**
 * Against a `muser run timer` process: an aborted migration returns to
 * RUNNING with the state intact and the timer still pending; invalid
 * transitions and requests are refused and leave the state as it was;
 * every request between the states follows the state machine's paths.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Client, ClientError, EventFd } from '../src/client/index.js';
import { abortMigration, getMigrationState, migrationFlags, MigrationState as S, readMigrationData, setMigrationState } from '../src/client/migrate.js';
import { Command, DeviceFeatureFlag, FeatureId, IrqSetFlag, MigrationFlag } from '../src/protocol/constants.js';
import { encodeMigDataReadRequest } from '../src/protocol/migration-data.js';
import { path as fsmPath } from '../src/migration/fsm.js';
import { le64 } from './helpers/bytes.js';
import { startTimer, type ChildServer } from './helpers/timer-process.js';

const BAR1 = 16 * 1024;
const EINVAL = 22;
const ENOTSUP = 95;

async function rejects(p: Promise<unknown>, errno: number): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof ClientError && e.errno === errno);
}

async function readAll(c: Client, chunk = 4096): Promise<Buffer> {
  const parts: Buffer[] = [];
  await readMigrationData(c, chunk, (d) => parts.push(Buffer.from(d)));
  return Buffer.concat(parts);
}

/** Brings the device from wherever it is to `s` (STOP_COPY -> PRE_COPY is not allowed directly). */
async function goTo(c: Client, s: S): Promise<void> {
  const now = await getMigrationState(c);
  // A RESUMING session is aborted by a reset (leaving it would load the empty stream).
  if (now === S.RESUMING) await c.reset();
  if (now === S.STOP_COPY && (s === S.PRE_COPY || s === S.PRE_COPY_P2P)) await setMigrationState(c, S.STOP);
  await setMigrationState(c, s);
}

describe('migration: abort and invalid requests (timer process)', () => {
  let dir: string;
  let server: ChildServer;
  let c: Client;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muser-mig-abort-'));
    server = await startTimer(join(dir, 't.sock'));
    c = await Client.connect(join(dir, 't.sock'));
  });

  after(async () => {
    c?.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an aborted migration returns to RUNNING with state intact, and the timer still fires', async () => {
    const irq = new EventFd();
    try {
      await c.setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, undefined, [irq.fd]);
      const bar1 = randomBytes(BAR1);
      await c.regionWrite(1, 0, bar1);
      const t = Math.ceil(Date.now() / 1000) + 1;
      await c.regionWrite(0, 0, le64(t));

      await setMigrationState(c, S.PRE_COPY);
      for (let i = 0; i < 3; i++) assert.equal((await c.migDataRead(1024)).length, 1024);
      await setMigrationState(c, S.STOP_COPY);
      for (let i = 0; i < 3; i++) assert.equal((await c.migDataRead(1024)).length, 1024);
      await abortMigration(c);
      assert.equal(await getMigrationState(c), S.RUNNING);

      // Pending work resumes: the timer fires at T on the source.
      await irq.waitFor(1, 4000);
      assert.ok(Date.now() / 1000 >= t - 0.01);
      assert.deepEqual(await c.regionRead(1, 0, BAR1), bar1);
      await setMigrationState(c, S.STOP_COPY);
      const state = await readAll(c);
      assert.deepEqual(state.subarray(0, BAR1), bar1);
      assert.equal(state.readBigInt64LE(BAR1), BigInt(t));
      await setMigrationState(c, S.RUNNING);

      // Stopped, the device raises nothing; a past deadline fires as soon as it runs again.
      // INTx masks itself when it fires (VFIO semantics): unmask it, as a guest's EOI would.
      await c.maskIrqs(0, 0, 1, false);
      const before = irq.total;
      await setMigrationState(c, S.STOP);
      await c.regionWrite(0, 0, le64(Math.floor(Date.now() / 1000) - 5));
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(irq.total, before, 'no interrupt while stopped');
      await setMigrationState(c, S.RUNNING);
      await irq.waitFor(before + 1, 2000);
    } finally {
      await c.disableIrqs(0).catch(() => undefined);
      irq.close();
    }
  });

  it('reports its migration features and answers probes', async () => {
    assert.equal(await migrationFlags(c), MigrationFlag.STOP_COPY | MigrationFlag.P2P | MigrationFlag.PRE_COPY);
    const { GET, SET, PROBE } = DeviceFeatureFlag;
    const probe = await c.deviceFeature(FeatureId.MIGRATION | PROBE | GET, { kind: 'none' }, 8);
    assert.equal(probe.flags, FeatureId.MIGRATION | PROBE | GET);
    assert.equal(probe.argsz, 8);
    await c.deviceFeature(FeatureId.MIG_DEVICE_STATE | PROBE | GET | SET, { kind: 'none' }, 8);
    await rejects(c.deviceFeature(FeatureId.MIGRATION | PROBE | SET, { kind: 'none' }, 8), EINVAL);
    await rejects(c.deviceFeature(FeatureId.MIGRATION | SET, { kind: 'raw', bytes: Buffer.alloc(8) }, 16), EINVAL);
    await rejects(c.deviceFeature(FeatureId.MIGRATION | GET, { kind: 'none' }, 8), EINVAL);
    await rejects(c.deviceFeature(FeatureId.MIG_DEVICE_STATE | SET, { kind: 'mig-state', deviceState: S.RUNNING, dataFd: 0 }, 8), EINVAL);
    await rejects(c.deviceFeature(3 | GET, { kind: 'none' }, 16), ENOTSUP);
    // SET echoes the request, data_fd included.
    const r = await c.request(Command.DEVICE_FEATURE, Buffer.from([16, 0, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]));
    assert.deepEqual([...r.payload], [16, 0, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  });

  it('refuses invalid transitions and leaves the state unchanged', async () => {
    await setMigrationState(c, S.RUNNING);
    await rejects(setMigrationState(c, S.ERROR), EINVAL);
    await rejects(setMigrationState(c, 8 as S), EINVAL);
    await rejects(setMigrationState(c, 0xabcd as S), EINVAL);
    assert.equal(await getMigrationState(c), S.RUNNING);
    await setMigrationState(c, S.STOP_COPY);
    await rejects(setMigrationState(c, S.PRE_COPY), EINVAL);
    await rejects(setMigrationState(c, S.PRE_COPY_P2P), EINVAL);
    assert.equal(await getMigrationState(c), S.STOP_COPY);
    await setMigrationState(c, S.RUNNING);
  });

  it('refuses migration data outside the saving and resuming states, and oversized reads', async () => {
    await setMigrationState(c, S.RUNNING);
    await rejects(c.migDataRead(1024), EINVAL);
    await rejects(c.migDataWrite(Buffer.alloc(16)), EINVAL);
    await setMigrationState(c, S.STOP_COPY);
    await rejects(c.migDataWrite(Buffer.alloc(16)), EINVAL);
    // More than the client's max_data_xfer_size (1 MiB by default), and an argsz too small for the data.
    await rejects(c.migDataRead(2 * 1024 * 1024), EINVAL);
    await rejects(c.request(Command.MIG_DATA_READ, encodeMigDataReadRequest({ argsz: 8 + 100, size: 4096 })), EINVAL);
    assert.equal(await getMigrationState(c), S.STOP_COPY);
    await setMigrationState(c, S.RUNNING);
  });

  it('takes every request along the state machine path (P2P and PRE_COPY offered)', async () => {
    const caps = { preCopy: true, p2p: true };
    const states = [S.STOP, S.RUNNING, S.STOP_COPY, S.RUNNING_P2P, S.PRE_COPY, S.PRE_COPY_P2P];
    for (const from of states) {
      for (const to of [...states, S.RESUMING, S.ERROR]) {
        await goTo(c, from);
        const allowed = fsmPath(from, to, caps) !== undefined;
        if (allowed) {
          await setMigrationState(c, to).catch((e: Error) => assert.fail(`${S[from]} -> ${S[to]}: ${e.message}`));
          assert.equal(await getMigrationState(c), to, `${S[from]} -> ${S[to]}`);
        } else {
          await rejects(setMigrationState(c, to), EINVAL);
          assert.equal(await getMigrationState(c), from, `${S[from]} -> ${S[to]} refused`);
        }
      }
    }
    await goTo(c, S.RUNNING);
  });

  it('a bad stream fails RESUMING -> STOP into ERROR; only a reset recovers', async () => {
    await setMigrationState(c, S.RESUMING);
    await c.migDataWrite(Buffer.alloc(100, 7));
    await rejects(setMigrationState(c, S.STOP), EINVAL);
    assert.equal(await getMigrationState(c), S.ERROR);
    await rejects(setMigrationState(c, S.RUNNING), EINVAL);
    await c.reset();
    assert.equal(await getMigrationState(c), S.RUNNING);
    // A stream of the right size loads; BAR1 takes it.
    const image = Buffer.concat([randomBytes(BAR1), le64(0)]);
    await setMigrationState(c, S.RESUMING);
    for (let off = 0; off < image.length; off += 5000) await c.migDataWrite(image.subarray(off, off + 5000));
    await setMigrationState(c, S.RUNNING);
    assert.deepEqual(await c.regionRead(1, 0, BAR1), image.subarray(0, BAR1));
  });
});
