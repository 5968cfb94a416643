// A device whose every callback throws (region reads and writes, sync and
// async, config hooks, doorbell, reset, connect, disconnect, migration)
// answers with errors and never disturbs another device in the same process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../src/native/index.js';
import { ClientError } from '../src/client/index.js';
import { MigrationState, setMigrationState } from '../src/client/migrate.js';
import { ManyProcess } from './helpers/many-process.js';
import { connectClient } from './helpers/raw.js';

const EIO = 5;
const isEio = (e: unknown): boolean => e instanceof ClientError && e.errno === EIO;

test('a device whose every callback throws does not affect another device in the same process', async () => {
  const p = await ManyProcess.start(['throwing', 'memory']);
  try {
    const good = await connectClient(p.path(1));
    let goodOps = 0;
    const stillGood = async (): Promise<void> => {
      const v = Buffer.from([goodOps & 0xff, 1, 2, 3]);
      await good.regionWrite(0, 0, v);
      assert.deepEqual(await good.regionRead(0, 0, 4), v);
      goodOps++;
    };

    for (let round = 0; round < 3; round++) {
      const bad = await connectClient(p.path(0)); // onConnect throws
      await stillGood();
      await assert.rejects(bad.regionRead(0, 0, 4), isEio);
      await assert.rejects(bad.regionWrite(0, 0, Buffer.alloc(4)), isEio);
      await stillGood();
      await assert.rejects(bad.regionRead(1, 0, 4), isEio, 'async read rejects');
      await assert.rejects(bad.regionWrite(1, 0, Buffer.alloc(4)), isEio, 'async write rejects');
      await assert.rejects(bad.regionRead(7, 0, 4), isEio, 'config read hook throws');
      await assert.rejects(bad.regionWrite(7, 4, Buffer.from([6, 0])), isEio, 'config write hook throws');
      await stillGood();
      // The doorbell's handler throws on every signal.
      const io = await bad.regionIoFds(0);
      for (const fd of io.fds) {
        native.eventfdWrite(fd, 1);
        native.close(fd);
      }
      await assert.rejects(setMigrationState(bad, MigrationState.STOP), isEio, 'onTransition throws');
      await assert.rejects(bad.reset(), isEio, 'onReset throws');
      await stillGood();
      bad.close(); // onDisconnect and the reset after it throw
      await bad.whenClosed;
      await stillGood();
    }
    assert.equal(goodOps, 15);
    assert.ok(p.alive, `the process lives: ${p.stderr}`);
    good.close();
  } finally {
    await p.stop();
  }
});
