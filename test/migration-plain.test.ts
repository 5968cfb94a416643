/**
 * Default migration: a device with no migration code (region memory, a
 * plain `state` object, config space, a pending interrupt) moves between
 * two server processes with nothing lost; timing for large memory.
 *
 * The servers are this file run as `node migration-plain.test.js --serve
 * <kind> <socket> <bytes>`: then it serves a device instead of testing.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Client, ClientError, EventFd } from '../src/client/index.js';
import { getMigrationState, migrate, MigrationState as S, setMigrationState } from '../src/client/migrate.js';
import { IrqSetFlag } from '../src/protocol/constants.js';
import type { DeviceSpec } from '../src/device/spec.js';
import { startServer, type ChildServer } from './helpers/timer-process.js';

const SELF = fileURLToPath(import.meta.url);
const serveAt = process.argv.indexOf('--serve');

/** A device that migrates without a line of migration code. */
function plainDevice(kind: string, bytes: number): DeviceSpec {
  return {
    name: `plain-${kind}`,
    identity: { vendorId: 0x4d55, deviceId: 0x0042, classCode: 0xff0000 },
    interrupts: { intx: true, msix: 2 },
    state: { counter: 0, log: [] as number[] },
    bars: {
      0: { size: bytes, memory: true },
      // BAR2: offset 0 reads and adds to state.counter; a write at 8 raises INTx.
      2: {
        size: 4096,
        read: (offset, _len, device) => (offset === 0 ? (device.state.counter as number) : 0),
        write(offset, data, device) {
          if (offset === 0) {
            device.state.counter = (device.state.counter as number) + data.readUInt32LE(0);
            (device.state.log as number[]).push(data.readUInt32LE(0));
          } else if (offset === 8) device.triggerIrq(0, 0);
        },
      },
    },
    migration: kind === 'none' ? false : undefined,
  };
}

async function serve(): Promise<void> {
  const [kind, sock, bytes] = process.argv.slice(serveAt + 1);
  const { Server } = await import('../src/server/server.js');
  const server = new Server(plainDevice(kind!, Number(bytes)), sock!, { log: 'warn' });
  process.stderr.write('ready\n');
  process.once('SIGTERM', () => server.close());
}

/** Runs this file as a server of `kind` on `path` and waits until it is ready. */
function start(kind: string, path: string, bytes: number): Promise<ChildServer> {
  return startServer([SELF, '--serve', kind, path, String(bytes)], path, 'ready');
}

function fill(c: Client, size: number, seed: number): Promise<void[]> {
  const writes: Promise<void>[] = [];
  for (let off = 0; off < size; off += 1024 * 1024) {
    const n = Math.min(1024 * 1024, size - off);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i += 4) b.writeUInt32LE(((off + i) * 2654435761 + seed) >>> 0, i);
    writes.push(c.regionWrite(0, off, b));
  }
  return Promise.all(writes);
}

async function readRegion(c: Client, size: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let off = 0; off < size; off += 1024 * 1024) parts.push(Buffer.from(await c.regionRead(0, off, Math.min(1024 * 1024, size - off))));
  return Buffer.concat(parts);
}

if (serveAt >= 0) {
  await serve();
} else {
  describe('default migration of a plain-data device (two processes)', () => {
    let dir: string;
    const procs: ChildServer[] = [];

    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'muser-plain-'));
    });

    after(async () => {
      await Promise.all(procs.map((p) => p.stop()));
      rmSync(dir, { recursive: true, force: true });
    });

    it('moves memory, state, config space and a pending interrupt; nothing is lost', async () => {
      const size = 1024 * 1024;
      const [p1, p2] = await Promise.all([start('plain', join(dir, 'a.sock'), size), start('plain', join(dir, 'b.sock'), size)]);
      procs.push(p1, p2);
      const a = await Client.connect(p1.path);
      const b = await Client.connect(p2.path);
      const srcIrq = new EventFd();
      const dstIrq = new EventFd();
      try {
        await fill(a, size, 1);
        for (const v of [5, 7, 30]) await a.regionWrite(2, 0, Buffer.from([v, 0, 0, 0]));
        // Bus master + memory enable: a config space change the destination must keep.
        await a.regionWrite(7, 4, Buffer.from([0x06, 0x00]));
        // INTx masked, then raised: it stays pending and must be delivered by the destination.
        await a.setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, undefined, [srcIrq.fd]);
        await a.maskIrqs(0, 0, 1, true);
        await a.regionWrite(2, 8, Buffer.from([1, 0, 0, 0]));

        // The destination's client wires its interrupt before the device runs (as QEMU does).
        await b.setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1, undefined, [dstIrq.fd]);
        const r = await migrate(a, b, { chunkSize: 64 * 1024 });
        assert.equal(r.preCopyBytes, 0, 'no PRE_COPY offered by default');
        assert.ok(r.stopCopyBytes > size && r.chunks > size / (64 * 1024));
        assert.equal(await getMigrationState(b), S.RUNNING);
        await dstIrq.waitFor(1, 2000);
        assert.equal(srcIrq.total, 0);

        assert.deepEqual(await readRegion(b, size), await readRegion(a, size));
        assert.equal((await b.regionRead(2, 0, 4)).readUInt32LE(0), 42);
        assert.deepEqual(await b.regionRead(7, 0, 256), await a.regionRead(7, 0, 256));
        assert.equal((await b.regionRead(7, 4, 1))[0]! & 0x06, 0x06);
        // The destination keeps working from there.
        await b.regionWrite(2, 0, Buffer.from([8, 0, 0, 0]));
        assert.equal((await b.regionRead(2, 0, 4)).readUInt32LE(0), 50);
      } finally {
        a.close();
        b.close();
        srcIrq.close();
        dstIrq.close();
      }
    });

    it('a device with migration: false refuses the feature', async () => {
      const p = await start('none', join(dir, 'n.sock'), 4096);
      procs.push(p);
      const c = await Client.connect(p.path);
      try {
        await assert.rejects(getMigrationState(c), (e: unknown) => e instanceof ClientError && e.errno === 95);
        await assert.rejects(c.migDataRead(16), (e: unknown) => e instanceof ClientError && e.errno === 95);
      } finally {
        c.close();
      }
    });

    it('timing: 64 MiB of device memory', async (t) => {
      const size = 64 * 1024 * 1024;
      const [p1, p2] = await Promise.all([start('plain', join(dir, 'big-a.sock'), size), start('plain', join(dir, 'big-b.sock'), size)]);
      procs.push(p1, p2);
      const a = await Client.connect(p1.path);
      const b = await Client.connect(p2.path);
      try {
        await fill(a, size, 7);
        const r = await migrate(a, b, { chunkSize: 1024 * 1024 });
        const mib = r.stopCopyBytes / (1024 * 1024);
        t.diagnostic(`64 MiB device, 1 MiB chunks: ${r.stopCopyBytes} bytes in ${r.chunks} chunks, ${r.totalMs.toFixed(0)} ms total, ${r.downtimeMs.toFixed(0)} ms downtime, ${(mib / (r.downtimeMs / 1000)).toFixed(0)} MiB/s`);
        const sample = [0, size / 2, size - 1024 * 1024];
        for (const off of sample) assert.deepEqual(await b.regionRead(0, off, 1024 * 1024), await a.regionRead(0, off, 1024 * 1024));
        // Back the other way in 64 KiB chunks.
        await setMigrationState(a, S.RUNNING);
        await a.reset();
        const back = await migrate(b, a, { chunkSize: 64 * 1024 });
        t.diagnostic(`64 MiB device, 64 KiB chunks: ${back.chunks} chunks, ${back.totalMs.toFixed(0)} ms total`);
        for (const off of sample) assert.deepEqual(await a.regionRead(0, off, 1024 * 1024), await b.regionRead(0, off, 1024 * 1024));
      } finally {
        a.close();
        b.close();
      }
    });
  });
}
