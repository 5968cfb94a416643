// A client that pipelines REGION_READs and never reads the replies: the
// server stops reading it once its unread replies pass the bound
// (ServerLimits.maxPendingBytes, 4 MiB by default), so the process's memory
// stays bounded, another device in the same process keeps answering, and
// the memory is back once the client leaves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../src/native/index.js';
import { Channel } from '../src/transport/channel.js';
import { connectNow } from '../src/transport/connect.js';
import { Command, HeaderFlag } from '../src/protocol/constants.js';
import { encodeMessage } from '../src/protocol/header.js';
import { encodeVersion } from '../src/protocol/version.js';
import { encodeRegionReadRequest } from '../src/protocol/region-access.js';
import { ManyProcess } from './helpers/many-process.js';
import { connectClient } from './helpers/raw.js';
import { sleep } from './helpers/wait.js';

/** The stated bound on RSS growth the hostile client may cause. */
const RSS_BOUND = 48 * 1024 * 1024;
const ATTACK_READS = 400_000;
const BATCH = 1024;
const EAGAIN = -11;

/** Connects, negotiates VERSION, then stops reading: every reply stays with the server. */
async function deafClient(path: string, onReply: (size: number) => void = () => undefined): Promise<{ fd: number; channel: Channel }> {
  const fd = connectNow(path);
  let answered!: (ok: boolean) => void;
  const version = new Promise<boolean>((r) => (answered = r));
  let negotiated = false;
  const channel = new Channel(fd, {
    onFrame: (f) => {
      if (negotiated) return onReply(f.bytes.length);
      negotiated = true;
      answered((f.bytes.readUInt32LE(8) & HeaderFlag.ERROR) === 0);
    },
    onClose: () => answered(false),
  });
  channel.send(encodeMessage({ msgId: 1, command: Command.VERSION }, encodeVersion({ major: 0, minor: 1, capabilities: { maxMsgFds: 16 } })));
  assert.equal(await version, true, 'VERSION accepted');
  channel.pauseReading(true);
  return { fd, channel };
}

/** Writes up to `count` 4 KiB REGION_READs; stops when the server has not taken any for a while. Returns how many went. */
async function flood(fd: number, count: number): Promise<number> {
  const batch = Buffer.concat(
    Array.from({ length: BATCH }, (_, i) => encodeRegionReadRequest({ offset: 0, region: 0, count: 4096 }, { msgId: i, command: Command.REGION_READ })),
  );
  let requests = 0;
  let at = 0;
  let stalls = 0;
  while (requests < count && stalls < 50) {
    const n = native.sendmsg(fd, batch.subarray(at));
    if (n === EAGAIN) {
      stalls++;
      await sleep(10);
      continue;
    }
    assert.ok(n > 0, `sendmsg: ${n}`);
    stalls = 0;
    at += n;
    if (at === batch.length) {
      at = 0;
      requests += BATCH;
      await new Promise((r) => setImmediate(r));
    }
  }
  return requests + Math.floor(at / (batch.length / BATCH));
}

test('a client that never reads its replies: bounded server memory, the other device keeps answering', async () => {
  const p = await ManyProcess.start(['memory', 'memory']);
  try {
    const good = await connectClient(p.path(1));
    await good.regionWrite(0, 0, Buffer.from('still here'));
    const check = async (): Promise<void> => {
      const r = await good.regionRead(0, 0, 4096);
      assert.equal(r.length, 4096);
      assert.equal(r.subarray(0, 10).toString(), 'still here');
    };
    // Warm up (JIT, heaps) so the baseline is the steady state.
    for (let i = 0; i < 4000; i++) await check();
    const base = await p.rss();

    const deaf = await deafClient(p.path(0));
    let goodReads = 0;
    let flooding = true;
    const meanwhile = (async () => {
      while (flooding) {
        await check();
        goodReads++;
      }
    })();
    const sent = await flood(deaf.fd, ATTACK_READS);
    flooding = false;
    await meanwhile;
    const during = await p.rss();
    for (let i = 0; i < 100; i++, goodReads++) await check();

    const growth = during - base;
    process.stdout.write(`# deaf client: ${sent} of ${ATTACK_READS} reads taken before the server stopped reading; RSS +${(growth / 2 ** 20).toFixed(1)} MiB (bound ${RSS_BOUND / 2 ** 20} MiB); ${goodReads} reads served to the other device meanwhile\n`);
    assert.ok(sent < ATTACK_READS, 'the server stopped reading the deaf client');
    assert.ok(growth < RSS_BOUND, `RSS grew by ${growth} bytes`);
    assert.ok(goodReads >= 100);

    // The client leaves: its device serves the next one, and memory is back within the bound.
    deaf.channel.close();
    const next = await connectClient(p.path(0));
    assert.equal((await next.regionRead(0, 0, 4)).length, 4);
    next.close();
    const afterwards = await p.rss();
    process.stdout.write(`# after the deaf client left: RSS ${((afterwards - base) / 2 ** 20).toFixed(1)} MiB over the baseline\n`);
    assert.ok(afterwards - base < RSS_BOUND, `RSS after the client left: +${afterwards - base} bytes`);
    good.close();
    assert.ok(p.alive);
  } finally {
    await p.stop();
  }
});

test('a client that stops reading, then reads again: every reply arrives, the server reads it again', async () => {
  const p = await ManyProcess.start(['memory']);
  try {
    let replies = 0;
    let bytes = 0;
    const slow = await deafClient(p.path(0), (size) => {
      replies++;
      bytes += size;
    });
    const sent = await flood(slow.fd, 40_000);
    assert.equal(replies, 0);
    slow.channel.pauseReading(false);
    // The server drains its backlog and reads the rest of the requests.
    for (let i = 0; i < 2000 && replies < sent; i++) await sleep(10);
    assert.equal(replies, sent, 'one reply per request');
    assert.equal(bytes, sent * (16 + 16 + 4096));
    slow.channel.close();
  } finally {
    await p.stop();
  }
});
