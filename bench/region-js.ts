/**
 * muser's JS per REGION_READ / REGION_WRITE, in process, no I/O: a Session
 * on one end of a socketpair gets whole requests as its poller would
 * deliver them (copied into its receive buffer, then its callback called
 * with the length: Channel, framer, Session, dispatch or the in-place path,
 * region I/O, reply encode, Channel.send), with `native.sendmsg` replaced
 * by a counter once VERSION is negotiated. The copy of the request (32-36
 * bytes) is the only work not muser's. What a message costs between the poller's callback and
 * the sendmsg system call, i.e. what the server spends between reading a
 * request and replying (bench/README.md, issue 22).
 *
 *   node dist/bench/region-js.js              # ns per message and bytes allocated per message
 *   REGION_JS_ROUNDS=9 REGION_JS_ITERATIONS=200000 node dist/bench/region-js.js
 *
 * ns: the fastest round's CPU time (user + system) per message. Bytes per
 * message: young-generation GCs in the timed rounds times the semi-space
 * size (`--max-semi-space-size`, run with a fixed one: the figure is then
 * exact to one GC), divided by the messages.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { native, PollEvent, type PollCallback } from '../src/native/index.js';
import { Device } from '../src/device/device.js';
import { Session, DEFAULT_LIMITS } from '../src/server/session.js';
import { offerMigration } from '../src/migration/offer.js';
import { silentLogger } from '../src/device/logger.js';
import { benchDevice } from '../src/samples/bench.js';
import { Channel } from '../src/transport/channel.js';
import { Command, HEADER_SIZE } from '../src/protocol/constants.js';
import { encodeMessage } from '../src/protocol/header.js';
import { encodeVersion } from '../src/protocol/version.js';
import { encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/protocol/region-access.js';

const ROUNDS = Number(process.env['REGION_JS_ROUNDS'] ?? 7);
const ITERATIONS = Number(process.env['REGION_JS_ITERATIONS'] ?? 200_000);

const device = new Device(benchDevice());
const [serverFd, clientFd] = native.socketpair();
// The poller's callback and receive buffer, as the addon would call them.
let pollCallback: PollCallback | undefined;
let recvBuffer: Buffer | undefined;
const realPollStart = native.pollStart;
(native as { pollStart: typeof native.pollStart }).pollStart = (fd, mode, cb, buf) => {
  if (fd === serverFd) [pollCallback, recvBuffer] = [cb, buf];
  return realPollStart(fd, mode, cb, buf);
};
const session = new Session(device, offerMigration(device), serverFd, DEFAULT_LIMITS, silentLogger, () => {});
if (!pollCallback || !recvBuffer) throw new Error('the session did not start a poller with a receive buffer');
const channel = session.channel as Channel;
channel.inject(encodeMessage({ msgId: 1, command: Command.VERSION }, encodeVersion({ major: 0, minor: 1, capabilities: {} })));
if (!session.negotiated) throw new Error('VERSION was not negotiated');

/** One received message, as the native poller delivers it: read into the receive buffer, then the callback with its length. */
function deliver(msg: Buffer): void {
  recvBuffer!.set(msg, 0);
  pollCallback!(PollEvent.Data, msg.length, undefined);
}

let replies = 0;
let replyBytes = 0;
const realSendmsg = native.sendmsg;
(native as { sendmsg: typeof native.sendmsg }).sendmsg = (fd, data) => {
  if (fd !== serverFd) return realSendmsg(fd, data);
  replies++;
  const len = Buffer.isBuffer(data) ? data.length : data.reduce((n, b) => n + b.length, 0);
  replyBytes += len;
  return len;
};

const bar0 = 0;
const read4 = encodeRegionReadRequest({ offset: 0x10, region: bar0, count: 4 }, { msgId: 2, command: Command.REGION_READ });
const read4k = encodeRegionReadRequest({ offset: 0, region: bar0, count: 4096 }, { msgId: 3, command: Command.REGION_READ });
const write4 = encodeRegionWriteRequest({ offset: 0x10, region: bar0, count: 4, data: Uint8Array.of(1, 2, 3, 4) }, { msgId: 4, command: Command.REGION_WRITE });

let gcs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if ((e as { detail?: { kind?: number } }).detail?.kind === 1) gcs++;
}).observe({ entryTypes: ['gc'] });

/** Fastest round's ns per message, and the young GCs of all rounds. */
async function measure(msg: Buffer, expectReply: number): Promise<{ ns: number; gcs: number; n: number }> {
  let best = Infinity;
  let n = 0;
  for (let i = 0; i < ITERATIONS / 10; i++) deliver(msg); // warm-up
  await new Promise((r) => setImmediate(r));
  const gc0 = gcs;
  for (let r = 0; r < ROUNDS; r++) {
    const before = replies;
    const t0 = process.cpuUsage();
    for (let i = 0; i < ITERATIONS; i++) deliver(msg);
    const t = process.cpuUsage(t0);
    if (replies - before !== ITERATIONS || replyBytes === 0) throw new Error('a request went unanswered');
    best = Math.min(best, ((t.user + t.system) * 1000) / ITERATIONS);
    n += ITERATIONS;
    // Lets the GC observer's entries arrive.
    await new Promise((res) => setImmediate(res));
  }
  void expectReply;
  return { ns: best, gcs: gcs - gc0, n };
}

const semiMiB = Number(process.execArgv.find((a) => a.startsWith('--max-semi-space-size='))?.split('=')[1] ?? NaN);
const out: Record<string, unknown> = {};
for (const [name, msg, rep] of [
  ['read_4', read4, HEADER_SIZE + 16 + 4],
  ['read_4096', read4k, HEADER_SIZE + 16 + 4096],
  ['write_4', write4, HEADER_SIZE + 16],
] as const) {
  const m = await measure(msg, rep);
  const perMsg = Number.isFinite(semiMiB) ? Math.round((m.gcs * semiMiB * 1024 * 1024) / m.n) : undefined;
  out[name] = { ns_per_msg: Math.round(m.ns), young_gcs: m.gcs, ...(perMsg === undefined ? {} : { bytes_per_msg_approx: perMsg }) };
}
process.stdout.write(`${JSON.stringify(out)}\n`);
session.close();
native.close(clientFd);
