// MIG_DATA_READ replies are as long as the client asked, zero-padded past the
// data: libvfio-user's client transport refuses shorter replies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '../src/index.js';
import { Client, MigrationState, setMigrationState } from '../src/client/index.js';
import { Command } from '../src/protocol/constants.js';
import { decodeMigDataReadReply, encodeMigDataReadRequest } from '../src/protocol/migration-data.js';

test('the last, short MIG_DATA_READ chunk is padded to the requested size', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'muser-migpad-'));
  const state = Buffer.from('0123456789abcdef'); // 16 bytes of device state
  const server = serve(
    {
      identity: { vendorId: 0x1234, deviceId: 0x0003 },
      bars: { 0: { size: 16 } },
      migration: { save: () => state, load: () => {} },
    },
    join(dir, 'm.sock'),
    { log: 'silent' },
  );
  const client = await Client.connect(server.path);
  try {
    await setMigrationState(client, MigrationState.STOP_COPY);
    const want = 1024;
    const reply = await client.request(Command.MIG_DATA_READ, encodeMigDataReadRequest({ argsz: 8 + want, size: want }));
    assert.equal(reply.header.size, 16 + 8 + want, 'the message is as long as the request asked');
    const m = decodeMigDataReadReply(reply.payload);
    assert.equal(m.size, state.length, 'size says how much is data');
    assert.equal(m.argsz, 8 + state.length);
    assert.deepEqual(Buffer.from(m.data), state);
    assert.ok(reply.payload.subarray(8 + state.length).every((b) => b === 0), 'the padding is zeros');
  } finally {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
