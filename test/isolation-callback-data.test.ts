// Data handed to a write callback stays valid for as long as the Promise
// the callback returned is pending, whatever the function's syntax, while
// other connections keep receiving into the shared receive buffer. Sync
// callbacks still get a zero-copy view.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type DeviceSpec } from '../src/index.js';
import { Client } from '../src/client/index.js';
import { isSharedReceiveView } from '../src/transport/channel.js';
import { le32 } from './helpers/bytes.js';

type WriteFn = NonNullable<NonNullable<DeviceSpec['bars']>[0]>['write'];

function deviceWith(write: WriteFn): DeviceSpec {
  return { identity: { vendorId: 0x1af4, deviceId: 0x10f2, classCode: 0xff0000 }, bars: { 0: { size: 4096, write } } };
}

/** A gate the test opens by hand, and a signal that the callback started. */
function gate(): { entered: Promise<void>; enter(): void; opened: Promise<void>; open(): void } {
  let enter!: () => void;
  let open!: () => void;
  const entered = new Promise<void>((r) => (enter = r));
  const opened = new Promise<void>((r) => (open = r));
  return { entered, enter, opened, open };
}

const flavours: [string, (g: ReturnType<typeof gate>, seen: number[], views: boolean[]) => WriteFn][] = [
  [
    'a plain function returning a Promise',
    (g, seen, views) => (_off, data) => {
      views.push(isSharedReceiveView(data));
      g.enter();
      return g.opened.then(() => void seen.push(data.readUInt32LE(0)));
    },
  ],
  [
    'an async function',
    (g, seen, views) =>
      async (_off, data) => {
        views.push(isSharedReceiveView(data));
        g.enter();
        await g.opened;
        seen.push(data.readUInt32LE(0));
      },
  ],
  [
    'a function returning a non-Promise thenable',
    (g, seen, views) => (_off, data) => {
      views.push(isSharedReceiveView(data));
      g.enter();
      const thenable = {
        then(ok: (v: void) => void, fail: (e: unknown) => void): void {
          g.opened.then(() => {
            seen.push(data.readUInt32LE(0));
            ok();
          }, fail);
        },
      };
      return thenable as unknown as Promise<void>;
    },
  ],
];

for (const [what, make] of flavours) {
  test(`callback data stays valid while the Promise is pending: ${what}`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muser-'));
    const g = gate();
    const seen: number[] = [];
    const views: boolean[] = [];
    const syncViews: boolean[] = [];
    const slow = serve(deviceWith(make(g, seen, views)), join(dir, 'slow.sock'), { log: 'silent' });
    const other = serve(
      deviceWith((_off, data) => {
        syncViews.push(isSharedReceiveView(data));
      }),
      join(dir, 'other.sock'),
      { log: 'silent' },
    );
    const a = await Client.connect(slow.path);
    const b = await Client.connect(other.path);
    try {
      const pending = a.regionWrite(0, 0, le32(0xaaaa0001));
      await g.entered;
      // Same-sized messages from another connection land in the receive buffer meanwhile.
      for (let i = 0; i < 20; i++) await b.regionWrite(0, 0, le32(0xbbbb0000 + i));
      g.open();
      await pending;
      assert.deepEqual(seen, [0xaaaa0001], 'the callback read its own bytes, not a later message');
      assert.deepEqual(views, [true], 'its data was a zero-copy view when it started');
      assert.equal(syncViews.length, 20);
      assert.ok(syncViews.every((v) => v), 'sync callbacks get zero-copy views');
    } finally {
      a.close();
      b.close();
      slow.close();
      other.close();
    }
  });
}

test('a read callback may return any thenable: the reply waits for its value', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'muser-')), 'thenable.sock');
  const server = serve(
    {
      identity: { vendorId: 0x1af4, deviceId: 0x10f2, classCode: 0xff0000 },
      bars: {
        0: {
          size: 4096,
          read: (offset) =>
            ({ then: (ok: (v: number) => void) => setImmediate(() => ok(0x1000 + offset)) }) as unknown as Promise<number>,
        },
      },
    },
    path,
    { log: 'silent' },
  );
  const c = await Client.connect(path);
  try {
    assert.equal((await c.regionRead(0, 8, 4)).readUInt32LE(0), 0x1008);
  } finally {
    c.close();
    server.close();
  }
});
