/**
 * A bounded, seeded fuzz loop: thousands of mutated valid messages (bit
 * flips, truncation, size field changes, random commands and flags, fds
 * attached) against the bench device in a child process. After each one
 * the server must answer a ping or, if the framing could not be trusted,
 * close the connection; it must never crash, hang or leak.
 *
 * MUSER_FUZZ_SEED and MUSER_FUZZ_ITERATIONS override the defaults; the seed
 * and iteration are in every failure message.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { native } from '../src/native/index.js';
import { closeAll } from '../src/transport/channel.js';
import {
  Command,
  DeviceFeatureFlag,
  FeatureId,
  HEADER_SIZE,
  HeaderFlag,
  IrqSetFlag,
  MigrationState,
} from '../src/protocol/constants.js';
import { encodeMessage } from '../src/protocol/header.js';
import { encodeVersion } from '../src/protocol/version.js';
import { encodeDeviceInfoRequest } from '../src/protocol/device-info.js';
import { encodeRegionInfoRequest } from '../src/protocol/region-info.js';
import { encodeRegionIoFdsRequest } from '../src/protocol/region-io-fds.js';
import { encodeIrqInfoRequest, encodeSetIrqsRequest } from '../src/protocol/irq.js';
import { encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/protocol/region-access.js';
import { encodeRegionWriteMultiRequest } from '../src/protocol/region-write-multi.js';
import { encodeDmaMapRequest, encodeDmaUnmapRequest } from '../src/protocol/dma.js';
import { encodeDeviceFeatureRequest } from '../src/protocol/device-feature.js';
import { encodeMigDataReadRequest } from '../src/protocol/migration-data.js';
import { ServerProcess } from './helpers/server-process.js';
import { sleep } from './helpers/wait.js';
import { RawConn, selfFdCount } from './helpers/raw.js';

const SEED = Number(process.env.MUSER_FUZZ_SEED ?? 0x5eed1234) >>> 0;
const ITERATIONS = Number(process.env.MUSER_FUZZ_ITERATIONS ?? 5000);
/** The server's largest message after VERSION (Session.maxMessageSize with default limits). */
const MAX_MESSAGE = HEADER_SIZE + 1024 * 1024 + 64;
const PING_ID = 0xffff;

/** xorshift32: tiny, deterministic. */
class Rng {
  constructor(private x: number) {
    if (this.x === 0) this.x = 1;
  }
  next(): number {
    let x = this.x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.x = x >>> 0;
    return this.x;
  }
  int(n: number): number {
    return this.next() % n;
  }
  chance(p: number): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

/** A valid message template: command, payload, and which fds it may carry. */
interface Template {
  command: number;
  payload: Buffer;
  fds?: 'memfd' | 'eventfd';
}

/** Valid messages for the bench device (no write to the BAR1 doorbell: its count is a loop bound). */
function corpus(r: Rng): Template[] {
  const t: Template[] = [];
  const small = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => r.int(16)));
  t.push({ command: Command.DEVICE_GET_INFO, payload: encodeDeviceInfoRequest({ argsz: 16 }) });
  for (let i = 0; i < 10; i++) t.push({ command: Command.DEVICE_GET_REGION_INFO, payload: encodeRegionInfoRequest({ argsz: 32 + 32 * (i % 2), flags: 0, index: i, capOffset: 0, size: 0, offset: 0 }) });
  t.push({ command: Command.DEVICE_GET_REGION_IO_FDS, payload: encodeRegionIoFdsRequest({ argsz: 64, flags: 0, index: 1, count: 0 }) });
  for (let i = 0; i < 5; i++) t.push({ command: Command.DEVICE_GET_IRQ_INFO, payload: encodeIrqInfoRequest({ argsz: 16, flags: 0, index: i, count: 0 }) });
  const irq = (index: number, flags: number, start: number, count: number, data?: Uint8Array): Buffer =>
    encodeSetIrqsRequest({ argsz: 20 + (data?.length ?? 0), flags, index, start, count, data });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(2, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1), fds: 'eventfd' });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, 1), fds: 'eventfd' });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, 0, 1), fds: 'eventfd' });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(2, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, 0, 1) });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(2, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 1) });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(2, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, 0, 1, Uint8Array.of(1)) });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(0, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 1) });
  t.push({ command: Command.DEVICE_SET_IRQS, payload: irq(2, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 0) });
  for (const [region, offset, count] of [[0, 0x80, 8], [0, 0, 4096], [1, 0, 4], [2, 0, 16], [2, 16, 8], [7, 0, 64], [7, 0x40, 4], [7, 0x100, 4]]) {
    t.push({ command: Command.REGION_READ, payload: encodeRegionReadRequest({ region, offset, count }) });
  }
  for (const [region, offset, count] of [[0, 0x80, 8], [0, 0x100, 2], [0, 0x200, 1], [2, 0, 4], [2, 12, 4], [7, 4, 2], [7, 0x10, 4], [7, 0x3c, 1]]) {
    t.push({ command: Command.REGION_WRITE, payload: encodeRegionWriteRequest({ region, offset, count, data: small(count) }) });
  }
  t.push({
    command: Command.REGION_WRITE_MULTI,
    payload: encodeRegionWriteMultiRequest({
      writes: [
        { region: 0, offset: 0x40, count: 8, data: small(8) },
        { region: 0, offset: 0x48, count: 1, data: small(1) },
        { region: 7, offset: 4, count: 2, data: small(2) },
      ],
    }),
  });
  for (let i = 0; i < 4; i++) {
    t.push({ command: Command.DMA_MAP, payload: encodeDmaMapRequest({ argsz: 32, flags: 3, offset: 0, address: 0x100000 * (i + 1), size: 0x4000 }), fds: 'memfd' });
    t.push({ command: Command.DMA_MAP, payload: encodeDmaMapRequest({ argsz: 32, flags: 1, offset: 0, address: 0x10000000 + 0x100000 * i, size: 0x10000 }) });
    t.push({ command: Command.DMA_UNMAP, payload: encodeDmaUnmapRequest({ argsz: 24, flags: 0, address: 0x100000 * (i + 1), size: 0x4000 }) });
  }
  t.push({ command: Command.DMA_UNMAP, payload: encodeDmaUnmapRequest({ argsz: 24, flags: 2, address: 0, size: 0 }) });
  t.push({ command: Command.DEVICE_RESET, payload: Buffer.alloc(0) });
  t.push({ command: Command.VERSION, payload: encodeVersion({ major: 0, minor: 1, capabilities: { maxMsgFds: 8 } }) });
  const G = DeviceFeatureFlag.GET;
  const S = DeviceFeatureFlag.SET;
  t.push({ command: Command.DEVICE_FEATURE, payload: encodeDeviceFeatureRequest({ argsz: 16, flags: FeatureId.MIGRATION | G, data: { kind: 'none' } }) });
  t.push({ command: Command.DEVICE_FEATURE, payload: encodeDeviceFeatureRequest({ argsz: 16, flags: FeatureId.MIG_DEVICE_STATE | G, data: { kind: 'none' } }) });
  t.push({
    command: Command.DEVICE_FEATURE,
    payload: encodeDeviceFeatureRequest({ argsz: 16, flags: FeatureId.MIG_DEVICE_STATE | S, data: { kind: 'mig-state', deviceState: MigrationState.RUNNING, dataFd: 0 } }),
  });
  t.push({ command: Command.DEVICE_FEATURE, payload: encodeDeviceFeatureRequest({ argsz: 8, flags: FeatureId.DMA_LOGGING_START | S | DeviceFeatureFlag.PROBE, data: { kind: 'none' } }) });
  t.push({ command: Command.MIG_DATA_READ, payload: encodeMigDataReadRequest({ argsz: 8 + 64, size: 64 }) });
  return t;
}

const INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 0xff, 0x100, 0xfff, 0x1000, 0x1001, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffff0, 0xffffffff];

interface Mutated {
  bytes: Buffer;
  fds: number[];
  kind: string;
}

/** Builds one mutated message from a template. */
function mutate(r: Rng, tpl: Template, msgId: number, pool: { memfd: number; eventfd: number }): Mutated {
  let bytes = encodeMessage({ msgId, command: tpl.command, flags: r.chance(0.05) ? HeaderFlag.NO_REPLY : 0 }, tpl.payload);
  const fds: number[] = tpl.fds ? [tpl.fds === 'memfd' ? pool.memfd : pool.eventfd] : [];
  const kind = r.pick(['flip', 'flip', 'flip', 'truncate', 'extend', 'size', 'command', 'flags', 'field', 'fds', 'none']);
  const fixSize = (): void => {
    bytes.writeUInt32LE(bytes.length, 4);
  };
  switch (kind) {
    case 'flip': {
      const n = 1 + r.int(4);
      // Mostly in the payload; sometimes anywhere, size field included.
      for (let i = 0; i < n; i++) {
        const at = bytes.length > HEADER_SIZE && r.chance(0.8) ? HEADER_SIZE + r.int(bytes.length - HEADER_SIZE) : r.int(bytes.length);
        bytes[at] ^= 1 << r.int(8);
      }
      break;
    }
    case 'truncate':
      bytes = bytes.subarray(0, HEADER_SIZE + r.int(Math.max(1, bytes.length - HEADER_SIZE)));
      if (r.chance(0.9)) fixSize();
      break;
    case 'extend':
      bytes = Buffer.concat([bytes, r.bytes(1 + r.int(r.chance(0.1) ? 5000 : 40))]);
      if (r.chance(0.9)) fixSize();
      break;
    case 'size':
      bytes.writeUInt32LE(r.chance(0.5) ? r.pick(INTERESTING) : Math.max(0, bytes.length + r.int(64) - 32), 4);
      break;
    case 'command':
      bytes.writeUInt16LE(r.chance(0.8) ? r.int(24) : r.int(0x10000), 2);
      break;
    case 'flags':
      bytes.writeUInt32LE(r.chance(0.5) ? r.int(64) : r.next(), 8);
      if (r.chance(0.3)) bytes.writeUInt32LE(r.next(), 12);
      break;
    case 'field': {
      const n = 1 + r.int(2);
      for (let i = 0; i < n && bytes.length >= HEADER_SIZE + 4; i++) {
        const at = HEADER_SIZE + 4 * r.int((bytes.length - HEADER_SIZE) >> 2);
        bytes.writeUInt32LE(r.pick(INTERESTING), at);
      }
      break;
    }
    case 'fds': {
      const n = 1 + r.int(r.chance(0.1) ? 20 : 3);
      for (let i = 0; i < n; i++) fds.push(r.chance(0.5) ? pool.memfd : pool.eventfd);
      break;
    }
  }
  if (bytes.readUInt16LE(0) === PING_ID) bytes.writeUInt16LE(PING_ID - 1, 0);
  return { bytes: Buffer.from(bytes), fds, kind };
}

/** Where the server's framer stands after `bytes`: complete, waiting for more, or distrusting a header. */
function frameState(bytes: Buffer): { state: 'aligned' | 'incomplete' | 'untrusted'; missing: number } {
  let pos = 0;
  while (bytes.length - pos >= HEADER_SIZE) {
    const size = bytes.readUInt32LE(pos + 4);
    if (size < HEADER_SIZE || size > MAX_MESSAGE) return { state: 'untrusted', missing: 0 };
    if (pos + size > bytes.length) return { state: 'incomplete', missing: pos + size - bytes.length };
    pos += size;
  }
  return pos === bytes.length ? { state: 'aligned', missing: 0 } : { state: 'incomplete', missing: -1 };
}

describe('fuzz: mutated valid messages against a server in a child process', () => {
  let server: ServerProcess;
  let idle: { fds: number; maps: number };
  let idleMemfdMaps: number;

  before(async () => {
    server = await ServerProcess.start({ device: 'bench' });
    const c = await RawConn.negotiated(server.path);
    assert.equal(await c.errnoOf(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 })), 'ok');
    c.close();
    idle = await server.idle();
    idleMemfdMaps = server.memfdMappings();
  });

  after(async () => {
    await server?.stop();
  });

  test(`${ITERATIONS} mutated messages, seed 0x${SEED.toString(16)}`, async (t) => {
    const r = new Rng(SEED);
    const templates = corpus(r);
    const pool = { memfd: native.memfd('fuzz', 64 * 1024), eventfd: native.eventfd(0) };
    const ourFds = selfFdCount();
    const counts: Record<string, number> = { aligned: 0, incomplete: 0, untrusted: 0, closedByServer: 0, reconnects: 0, errorReplies: 0, okReplies: 0 };
    let conn: RawConn | undefined;
    let msgId = 1;

    const connect = async (where: string): Promise<RawConn> => {
      counts.reconnects++;
      for (let attempt = 0; ; attempt++) {
        const c = RawConn.connect(server.path);
        const v = await c.call(Command.VERSION, encodeVersion({ major: 0, minor: 1, capabilities: { maxMsgFds: 16 } }), { msgId: 1 });
        if (v !== 'closed' && !(v.header.flags & HeaderFlag.ERROR)) return c;
        c.close();
        // Refused while the server still winds down the previous connection.
        assert.ok(attempt < 500, `${where}: no new connection accepted (seed 0x${SEED.toString(16)})`);
        assert.ok(server.alive, `${where}: server died: ${server.stderr}`);
        await sleep(2);
      }
    };

    /** Sends the ping and reads until its reply; 'closed' if the server hung up. */
    const ping = async (c: RawConn, where: string): Promise<'ok' | 'closed'> => {
      c.command(Command.DEVICE_GET_INFO, encodeDeviceInfoRequest({ argsz: 16 }), { msgId: PING_ID });
      for (;;) {
        let f;
        try {
          f = await c.next(5000);
        } catch {
          assert.fail(`${where}: no reply to the ping in 5 s: the server hangs (seed 0x${SEED.toString(16)})`);
        }
        if (f === 'closed') return 'closed';
        closeAll(f.fds);
        if (f.header.flags & HeaderFlag.ERROR) counts.errorReplies++;
        else counts.okReplies++;
        if (f.header.msgId === PING_ID && f.header.command === Command.DEVICE_GET_INFO && (f.header.flags & HeaderFlag.TYPE_MASK) === HeaderFlag.REPLY) {
          assert.equal(f.header.flags & HeaderFlag.ERROR, 0, `${where}: ping refused, errno ${f.header.errno}`);
          return 'ok';
        }
      }
    };

    try {
      for (let i = 0; i < ITERATIONS; i++) {
        const where = `iteration ${i}`;
        conn ??= await connect(where);
        msgId = msgId % 0x7000 + 1;
        const m = mutate(r, r.pick(templates), msgId, pool);
        // Now and then, two messages back to back in one write.
        let bytes = m.bytes;
        if (r.chance(0.05)) bytes = Buffer.concat([bytes, mutate(r, r.pick(templates), msgId + 1, pool).bytes]);
        const fs = frameState(bytes);
        counts[fs.state]++;
        if (r.chance(0.1) && bytes.length > 1) {
          const cut = 1 + r.int(bytes.length - 1);
          conn.send(bytes.subarray(0, cut), m.fds);
          conn.send(bytes.subarray(cut));
        } else {
          conn.send(bytes, m.fds);
        }
        if (fs.state === 'untrusted') {
          assert.ok(await conn.waitClosed(3000), `${where} (${m.kind}): a header that cannot be trusted must close the connection (seed 0x${SEED.toString(16)})`);
          conn.close();
          conn = undefined;
          counts.closedByServer++;
          continue;
        }
        if (fs.state === 'incomplete') {
          if (fs.missing > 0 && fs.missing <= 64 * 1024 && r.chance(0.5)) {
            conn.send(Buffer.alloc(fs.missing)); // complete it with zeros: it is then judged as a whole
          } else {
            conn.close(); // leave it hanging: the server must drop the partial message
            conn = undefined;
            continue;
          }
        }
        if ((await ping(conn, `${where} (${m.kind})`)) === 'closed') {
          conn.close();
          conn = undefined;
          counts.closedByServer++;
        }
        if (i % 1000 === 999) assert.ok(server.alive, `${where}: server alive`);
      }
    } finally {
      conn?.close();
      native.close(pool.memfd);
      native.close(pool.eventfd);
    }
    t.diagnostic(`seed 0x${SEED.toString(16)}: ${JSON.stringify(counts)}`);
    assert.ok(server.alive, `server alive after the loop: ${server.stderr}`);
    assert.ok(counts.okReplies > ITERATIONS / 4 && counts.errorReplies > ITERATIONS / 10, `the loop exercised both paths: ${JSON.stringify(counts)}`);
    // No leak on either side.
    const s = await server.idle();
    assert.equal(s.fds, idle.fds, `server fds back to baseline (seed 0x${SEED.toString(16)})`);
    assert.equal(server.memfdMappings('fuzz'), 0, 'no DMA memory left mapped');
    assert.equal(server.memfdMappings(), idleMemfdMaps);
    assert.ok(s.maps < idle.maps + 200, `server mappings near baseline: ${s.maps} vs ${idle.maps}`);
    assert.equal(selfFdCount(), ourFds - 2, 'test process fds back (pool closed)');
    // A fresh client negotiates and reads.
    const c = await RawConn.negotiated(server.path);
    const f = await c.call(Command.REGION_READ, encodeRegionReadRequest({ region: 7, offset: 0, count: 4 }));
    assert.ok(f !== 'closed' && !(f.header.flags & HeaderFlag.ERROR));
    assert.equal(f.payload.readUInt32LE(16), 0x00014d55, 'vendor and device id');
    c.close();
  });
});
