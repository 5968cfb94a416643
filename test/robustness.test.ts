/**
 * Hostile input, one class per test, against a server in a child process.
 * Each bad message gets an error reply with a fitting errno (and the same
 * connection keeps serving), or a clean close of that connection (and the
 * next client is served). The server never crashes or leaks an fd.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { native } from '../src/native/index.js';
import { closeAll } from '../src/transport/channel.js';
import { Command, HEADER_SIZE, HeaderFlag, IrqSetFlag } from '../src/protocol/constants.js';
import { encodeMessage } from '../src/protocol/header.js';
import { encodeVersion } from '../src/protocol/version.js';
import { encodeDeviceInfoRequest } from '../src/protocol/device-info.js';
import { encodeRegionInfoRequest } from '../src/protocol/region-info.js';
import { encodeIrqInfoRequest, encodeSetIrqsRequest } from '../src/protocol/irq.js';
import { encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/protocol/region-access.js';
import { encodeRegionWriteMultiRequest } from '../src/protocol/region-write-multi.js';
import { encodeDmaMapRequest, encodeDmaUnmapRequest } from '../src/protocol/dma.js';
import { decodeDmaReadRequest, encodeDmaReadReply } from '../src/protocol/dma-access.js';
import { ServerProcess } from './helpers/server-process.js';
import { sleep } from './helpers/wait.js';
import { RawConn } from './helpers/raw.js';
import { le32 } from './helpers/bytes.js';

const E = { EPERM: 1, ENOENT: 2, EIO: 5, E2BIG: 7, EFAULT: 14, EBUSY: 16, EEXIST: 17, EINVAL: 22, ENOSPC: 28, ENOSYS: 38, ENOTSUP: 95, ETIMEDOUT: 110 } as const;
const MAX_DMA_MAPS = 8;
const MAX_XFER = 1024 * 1024;

// ---------------------------------------------------------------- payloads

const deviceInfo = (argsz = 16): Buffer => encodeDeviceInfoRequest({ argsz });
const regionInfo = (index: number, argsz = 32): Buffer => encodeRegionInfoRequest({ argsz, flags: 0, index, capOffset: 0, size: 0, offset: 0 });
const irqInfo = (index: number, argsz = 16): Buffer => encodeIrqInfoRequest({ argsz, flags: 0, index, count: 0 });
const setIrqs = (index: number, flags: number, start: number, count: number, data?: Uint8Array, argsz = 20 + (data?.length ?? 0)): Buffer =>
  encodeSetIrqsRequest({ argsz, flags, index, start, count, data });
const read = (region: number, offset: number, count: number): Buffer => encodeRegionReadRequest({ region, offset, count });
const write = (region: number, offset: number, data: Buffer): Buffer => encodeRegionWriteRequest({ region, offset, count: data.length, data });
const dmaMap = (address: number, size: number, offset = 0, flags = 3, argsz = 32): Buffer => encodeDmaMapRequest({ argsz, flags, offset, address, size });
const dmaUnmap = (address: number, size: number, flags = 0): Buffer => encodeDmaUnmapRequest({ argsz: 24, flags, address, size });

/** A DMA_MAP payload with raw 64-bit fields (for values past 2^53). */
function dmaMapRaw(address: bigint, size: bigint, offset = 0n): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(32, 0);
  b.writeUInt32LE(3, 4);
  b.writeBigUInt64LE(offset, 8);
  b.writeBigUInt64LE(address, 16);
  b.writeBigUInt64LE(size, 24);
  return b;
}

/** A REGION_READ payload with a raw 64-bit offset. */
function readRaw(region: number, offset: bigint, count: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(offset, 0);
  b.writeUInt32LE(region, 8);
  b.writeUInt32LE(count, 12);
  return b;
}

/** A header with any size field, followed by `body`. */
function rawMessage(size: number, command: number = Command.DEVICE_GET_INFO, body: Buffer = Buffer.alloc(0), flags = 0, msgId = 77): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt16LE(msgId, 0);
  h.writeUInt16LE(command, 2);
  h.writeUInt32LE(size >>> 0, 4);
  h.writeUInt32LE(flags, 8);
  return Buffer.concat([h, body]);
}

/** Deterministic bytes (xorshift32). */
function randomBytes(seed: number, n: number): Buffer {
  let x = seed >>> 0 || 1;
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

// ---------------------------------------------------------------- fixture

describe('robustness: a server in a child process against hostile input', () => {
  let server: ServerProcess;
  /** Server fd count with no client. */
  let idleFds: number;
  let idleMaps: number;
  /** memfd mappings of the idle server (its own region memory). */
  let idleMemfdMaps: number;
  /** Server fd count with one negotiated client and nothing else. */
  let connectedFds: number;

  /** A fresh negotiated connection, once the server has let the previous one go. */
  async function open(): Promise<RawConn> {
    await server.idle();
    return RawConn.negotiated(server.path);
  }

  /** The connection still serves: a REGION_READ of BAR0 works. */
  async function serving(c: RawConn): Promise<void> {
    assert.equal(await c.errnoOf(Command.REGION_READ, read(0, 0, 4)), 'ok', 'connection keeps serving');
    assert.equal(c.pendingFrames(), 0, 'no stray messages');
  }

  /** The server closed `c`, lives on, and serves a new client. */
  async function closedAndRecovered(c: RawConn, what: string): Promise<void> {
    assert.ok(await c.waitClosed(3000), `${what}: server closes the connection`);
    c.close();
    assert.ok(server.alive, `${what}: server alive`);
    const n = await open();
    await serving(n);
    n.close();
  }

  /** Expects an error reply with `errno` for each payload. */
  async function expectErrno(c: RawConn, errno: number, command: number, payloads: Buffer[], fds?: readonly number[]): Promise<void> {
    for (const [i, p] of payloads.entries()) {
      assert.equal(await c.errnoOf(command, p, { fds }), errno, `command ${command} case ${i}`);
    }
  }

  before(async () => {
    server = await ServerProcess.start({ device: 'testdev', limits: { maxDmaMaps: MAX_DMA_MAPS, requestTimeoutMs: 300 } });
    // Let the server do its lazy first-client work before taking baselines.
    const c = await open();
    await serving(c);
    connectedFds = (await server.stats()).fds;
    c.close();
    const idle = await server.idle();
    idleFds = idle.fds;
    idleMaps = idle.maps;
    idleMemfdMaps = server.memfdMappings();
  });

  after(async () => {
    await server?.stop();
  });

  test('unknown commands: ENOSYS; server-to-client commands: EINVAL; posted ones: no reply', async () => {
    const c = await open();
    for (const cmd of [0, 14, 19, 100, 0x7fff, 0xffff]) assert.equal(await c.errnoOf(cmd, Buffer.alloc(8)), E.ENOSYS, `command ${cmd}`);
    assert.equal(await c.errnoOf(Command.DMA_READ, Buffer.alloc(16)), E.EINVAL);
    assert.equal(await c.errnoOf(Command.DMA_WRITE, Buffer.alloc(16)), E.EINVAL);
    c.command(99, Buffer.alloc(4), { flags: HeaderFlag.NO_REPLY });
    await serving(c);
    c.close();
  });

  test('bad sizes and argsz: EINVAL', async () => {
    const c = await open();
    await expectErrno(c, E.EINVAL, Command.DEVICE_GET_INFO, [Buffer.alloc(0), Buffer.alloc(3), deviceInfo(8), deviceInfo(0)]);
    await expectErrno(c, E.EINVAL, Command.DEVICE_GET_REGION_INFO, [Buffer.alloc(16), regionInfo(0, 16), regionInfo(0, 0)]);
    await expectErrno(c, E.EINVAL, Command.DEVICE_GET_IRQ_INFO, [Buffer.alloc(15), irqInfo(0, 8)]);
    await expectErrno(c, E.EINVAL, Command.DEVICE_SET_IRQS, [
      Buffer.alloc(19),
      setIrqs(2, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, 0, 1, undefined, 4),
      setIrqs(2, IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK, 0, 1, new Uint8Array(0)), // count 1, no bool byte
      Buffer.concat([setIrqs(2, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, 0, 1), Buffer.alloc(4)]),
    ]);
    await expectErrno(c, E.EINVAL, Command.DMA_MAP, [Buffer.alloc(31), dmaMap(0x10000, 4096, 0, 3, 16)]);
    await expectErrno(c, E.EINVAL, Command.DMA_UNMAP, [Buffer.alloc(23)]);
    await expectErrno(c, E.EINVAL, Command.REGION_READ, [Buffer.alloc(15)]);
    const shortWrite = write(0, 0, Buffer.alloc(8)).subarray(0, 20); // count 8, 4 data bytes
    const longWrite = Buffer.concat([write(0, 0, Buffer.alloc(8)), Buffer.alloc(3)]);
    await expectErrno(c, E.EINVAL, Command.REGION_WRITE, [shortWrite, longWrite, Buffer.alloc(10)]);
    const multi = encodeRegionWriteMultiRequest({ writes: [{ region: 0, offset: 0, count: 4, data: Buffer.alloc(4) }] });
    const overCount = Buffer.from(multi);
    overCount.writeUInt32LE(3, 0); // wr_cnt 3 with one entry
    const badEntry = Buffer.from(multi);
    badEntry.writeUInt32LE(9, 8 + 12); // entry count 9 > 8
    await expectErrno(c, E.EINVAL, Command.REGION_WRITE_MULTI, [Buffer.alloc(4), overCount, badEntry]);
    await expectErrno(c, E.EINVAL, Command.DEVICE_RESET, [Buffer.alloc(1)]);
    await serving(c);
    c.close();
  });

  test('out-of-range region, offset and count: EINVAL', async () => {
    const c = await open();
    const bad = [
      read(5, 0, 4), // no BAR5
      read(6, 0, 4), // no ROM
      read(8, 0, 4), // no VGA
      read(9, 0, 4),
      read(100, 0, 4),
      read(0xffffffff, 0, 4),
      read(0, 4096, 1),
      read(0, 4095, 2),
      read(0, 0, 4097),
      read(0, 0, 0),
      read(0, Number.MAX_SAFE_INTEGER, 1),
      readRaw(0, 0xffff_ffff_ffff_fff0n, 0x20), // past 2^53
      readRaw(0, 0xffff_ffff_ffff_ffffn, 1),
      read(2, 8, 16), // straddles the MSI-X table and PBA
      read(7, 4095, 4), // config space end
    ];
    await expectErrno(c, E.EINVAL, Command.REGION_READ, bad);
    await expectErrno(c, E.EINVAL, Command.REGION_WRITE, [write(5, 0, Buffer.alloc(4)), write(0, 4094, Buffer.alloc(4)), write(0, 0, Buffer.alloc(0)), write(1, 4096, le32(1))]);
    await expectErrno(c, E.EINVAL, Command.DEVICE_GET_REGION_INFO, [regionInfo(9), regionInfo(0xffffffff)]);
    // One bad entry refuses the multi-write (the ones before it were done: they are posted writes).
    const writes = [
      { region: 0, offset: 0x10, count: 1, data: Buffer.from([0x42]) },
      { region: 0, offset: 4095, count: 2, data: Buffer.from([1, 2]) },
    ];
    assert.equal(await c.errnoOf(Command.REGION_WRITE_MULTI, encodeRegionWriteMultiRequest({ writes })), E.EINVAL);
    await serving(c);
    c.close();
  });

  test('count above max_data_xfer_size: E2BIG; a message above the maximum size: clean close', async () => {
    const c = await open();
    assert.equal(await c.errnoOf(Command.REGION_READ, read(0, 0, MAX_XFER + 1)), E.E2BIG);
    assert.equal(await c.errnoOf(Command.REGION_READ, read(0, 0, 0xffffffff)), E.E2BIG);
    assert.equal(await c.errnoOf(Command.REGION_WRITE, write(0, 0, Buffer.alloc(MAX_XFER + 1))), E.E2BIG);
    await serving(c);
    // 2 MiB of data does not even fit the negotiated message size.
    c.command(Command.REGION_WRITE, write(0, 0, Buffer.alloc(2 * MAX_XFER)));
    await closedAndRecovered(c, 'oversized REGION_WRITE');
  });

  test('bad IRQ indexes and ranges: EINVAL, and every fd that came along is closed', async () => {
    const c = await open();
    const before = (await server.stats()).fds;
    assert.equal(before, connectedFds);
    const efds = [native.eventfd(0), native.eventfd(0)];
    try {
      await expectErrno(c, E.EINVAL, Command.DEVICE_GET_IRQ_INFO, [irqInfo(5), irqInfo(0xffffffff)]);
      const T = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER;
      const M = IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK;
      await expectErrno(c, E.EINVAL, Command.DEVICE_SET_IRQS, [
        setIrqs(5, M, 0, 1),
        setIrqs(0xffffffff, M, 0, 1),
        setIrqs(2, M, 1, 1), // MSI-X has one vector
        setIrqs(2, M, 0, 2),
        setIrqs(2, M, 0xffffffff, 2), // start + count wraps
        setIrqs(2, M, 2, 0xffffffff),
        setIrqs(1, M, 0, 1), // no MSI vectors
        setIrqs(3, M, 0, 0), // ERR cannot be masked
        setIrqs(2, IrqSetFlag.DATA_NONE | IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_MASK, 0, 1), // two DATA bits
        setIrqs(2, IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK | IrqSetFlag.ACTION_UNMASK, 0, 1), // two ACTION bits
        setIrqs(2, IrqSetFlag.DATA_NONE, 0, 1), // no action
        setIrqs(2, 1 << 6 | M, 0, 1), // unknown flag
      ]);
      // With fds: too many for the vectors, fds without DATA_EVENTFD, masking with an eventfd.
      await expectErrno(c, E.EINVAL, Command.DEVICE_SET_IRQS, [setIrqs(2, T, 0, 1)], efds);
      await expectErrno(c, E.EINVAL, Command.DEVICE_SET_IRQS, [setIrqs(2, M, 0, 1)], [efds[0]]);
      await expectErrno(c, E.EINVAL, Command.DEVICE_SET_IRQS, [setIrqs(2, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_MASK, 0, 1)], [efds[0]]);
      await expectErrno(c, E.EINVAL, Command.DEVICE_SET_IRQS, [setIrqs(0, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, 0, 1)], efds);
      await expectErrno(c, E.EINVAL, Command.DEVICE_SET_IRQS, [setIrqs(5, T, 0, 1)], [efds[0]]);
      const s = await server.stats();
      assert.equal(s.irqFds, 0, 'no eventfd was installed');
      assert.equal(s.fds, before, 'every rejected eventfd was closed');
      await serving(c);
    } finally {
      closeAll(efds);
      c.close();
    }
  });

  test('DMA maps: overlapping EEXIST, unaligned/zero-size/wrapping EINVAL, too many ENOSPC; rejected fds are closed', async () => {
    const c = await open();
    const mfd = native.memfd('dma', 64 * 1024);
    const small = native.memfd('small', 4096);
    try {
      const base = await server.stats();
      const map = (p: Buffer, fds?: number[]): Promise<number | 'ok' | 'closed'> => c.errnoOf(Command.DMA_MAP, p, { fds });
      assert.equal(await map(dmaMap(0x10000, 0x4000), [mfd]), 'ok');
      // Overlaps: inside, straddling either end, covering, identical; with and without an fd.
      for (const [a, s] of [[0x12000, 0x1000], [0x13000, 0x4000], [0xf000, 0x2000], [0x8000, 0x10000], [0x10000, 0x4000]]) {
        assert.equal(await map(dmaMap(a, s), [mfd]), E.EEXIST, `overlap 0x${a.toString(16)}+0x${s.toString(16)}`);
        assert.equal(await map(dmaMap(a, s)), E.EEXIST);
      }
      // Unaligned address, size, fd offset; zero size.
      for (const p of [dmaMap(0x20001, 0x1000), dmaMap(0x20000, 0x1001), dmaMap(0x20000, 0x1000, 0x100), dmaMap(0x20000, 0)]) {
        assert.equal(await map(p, [mfd]), E.EINVAL);
      }
      assert.equal(await map(dmaMap(0x20000, 0)), E.EINVAL, 'zero size without an fd');
      // Wrapping or past 2^53; fd offset + size past the fd; bad flags; two fds.
      for (const p of [
        dmaMap(Number.MAX_SAFE_INTEGER - 0xfff, 0x2000),
        dmaMapRaw(0xffff_ffff_ffff_f000n, 0x2000n),
        dmaMapRaw(0x20000n, 0xffff_ffff_ffff_f000n),
        dmaMapRaw(0x20000n, 0x1000n, 0xffff_ffff_ffff_f000n),
        dmaMap(0x20000, 0x1000, 64 * 1024), // offset at the end of the 64 KiB memfd
        dmaMap(0x20000, 0x1000, 0, 4),
      ]) {
        assert.equal(await map(p, [mfd]), E.EINVAL);
      }
      assert.equal(await map(dmaMap(0x20000, 0x2000), [small]), E.EINVAL, 'fd shorter than the region');
      assert.equal(await map(dmaMap(0x20000, 0x1000), [mfd, small]), E.EINVAL, 'two fds');
      // Fill the table: 1 mapped, 7 more fit, the 9th does not.
      for (let i = 1; i < MAX_DMA_MAPS; i++) assert.equal(await map(dmaMap(0x100000 * i, 0x1000), i % 2 ? [mfd] : undefined), 'ok');
      assert.equal(await map(dmaMap(0x100000 * MAX_DMA_MAPS, 0x1000), [mfd]), E.ENOSPC);
      assert.equal(await map(dmaMap(0x100000 * MAX_DMA_MAPS, 0x1000)), E.ENOSPC);
      assert.equal((await server.stats()).dmaMaps, MAX_DMA_MAPS);
      // Unmap errors: nothing there, wrong size, unknown flags, ALL with an address.
      for (const [p, errno] of [
        [dmaUnmap(0x30000, 0x1000), E.ENOENT],
        [dmaUnmap(0x10000, 0x1000), E.ENOENT],
        [dmaUnmap(0x10000, 0x4000, 1 << 4), E.EINVAL],
        [dmaUnmap(0x10000, 0x4000, 2), E.EINVAL],
      ] as [Buffer, number][]) {
        assert.equal(await c.errnoOf(Command.DMA_UNMAP, p), errno);
      }
      assert.equal(await c.errnoOf(Command.DMA_UNMAP, dmaUnmap(0x100000, 0x1000)), 'ok');
      assert.equal(await map(dmaMap(0x100000 * MAX_DMA_MAPS, 0x1000), [mfd]), 'ok', 'room again after an unmap');
      assert.equal(await c.errnoOf(Command.DMA_UNMAP, dmaUnmap(0, 0, 2)), 'ok', 'unmap all');
      const s = await server.stats();
      assert.equal(s.dmaMaps, 0);
      assert.equal(s.fds, base.fds, 'every DMA fd, accepted or refused, was closed by the server');
      assert.equal(server.memfdMappings('dma'), 0, 'DMA mappings released');
      assert.equal(server.memfdMappings('small'), 0);
      await serving(c);
    } finally {
      native.close(mfd);
      native.close(small);
      c.close();
    }
  });

  test('more fds than max_msg_fds: EINVAL, and all of them are closed', async () => {
    const c = await open();
    const before = (await server.stats()).fds;
    const mfd = native.memfd('many', 4096);
    try {
      for (const n of [17, 64, 250]) {
        const fds = new Array<number>(n).fill(mfd); // the kernel installs n distinct fds
        assert.equal(await c.errnoOf(Command.DEVICE_GET_INFO, deviceInfo(), { fds }), E.EINVAL, `${n} fds`);
        assert.equal(await c.errnoOf(Command.DMA_MAP, dmaMap(0x10000, 0x1000), { fds }), E.EINVAL);
        assert.equal(await c.errnoOf(Command.DEVICE_SET_IRQS, setIrqs(2, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 0, n), { fds }), E.EINVAL);
      }
      // Within the limit but unwanted: served, fds closed.
      assert.equal(await c.errnoOf(Command.DEVICE_GET_INFO, deviceInfo(), { fds: new Array<number>(16).fill(mfd) }), 'ok');
      const s = await server.stats();
      assert.equal(s.fds, before);
      assert.equal(s.dmaMaps, 0);
      assert.equal(s.irqFds, 0);
      await serving(c);
    } finally {
      native.close(mfd);
      c.close();
    }
  });

  test('replies the server did not ask for are dropped (fds closed); the connection keeps serving', async () => {
    const c = await open();
    const before = await server.stats();
    const mfd = native.memfd('reply', 4096);
    try {
      c.send(encodeMessage({ msgId: 4321, command: Command.DMA_READ, flags: HeaderFlag.REPLY }, Buffer.alloc(20)));
      c.send(encodeMessage({ msgId: 4322, command: Command.REGION_READ, flags: HeaderFlag.REPLY | HeaderFlag.ERROR, errno: 5 }));
      c.send(encodeMessage({ msgId: 4323, command: 0xffff, flags: HeaderFlag.REPLY }, Buffer.alloc(3)), [mfd, mfd]);
      await serving(c);
      const s = await server.stats();
      assert.equal(s.dropped, before.dropped + 3);
      assert.equal(s.fds, before.fds);
    } finally {
      native.close(mfd);
      c.close();
    }
  });

  test('messages split across writes are reassembled; a truncated one followed by a close leaves no trace', async () => {
    let c = await open();
    const msg = encodeMessage({ msgId: 9, command: Command.REGION_WRITE }, write(0, 0x20, Buffer.from('split message')));
    for (let i = 0; i < msg.length; i += 5) {
      c.send(msg.subarray(i, i + 5));
      await sleep(1);
    }
    const r = await c.next();
    assert.ok(r !== 'closed' && r.header.msgId === 9 && !(r.header.flags & HeaderFlag.ERROR));
    assert.equal((await c.call(Command.REGION_READ, read(0, 0x20, 13)) as { payload: Buffer }).payload.subarray(16).toString(), 'split message');
    // Half a message, then hang up (with fds in flight).
    const mfd = native.memfd('trunc', 4096);
    c.send(msg.subarray(0, 10));
    c.send(msg.subarray(10, 30), [mfd, mfd, mfd]);
    native.close(mfd);
    await sleep(20);
    c.close();
    await server.idle();
    assert.ok(server.alive);
    assert.equal((await server.stats()).fds, idleFds, 'the fds of the unfinished message were closed');
    // Just a partial header before VERSION, then close.
    c = RawConn.connect(server.path);
    c.send(Buffer.from([1, 0, 1]));
    await sleep(10);
    c.close();
    c = await open();
    await serving(c);
    c.close();
  });

  test('a header whose size is below 16 or above the maximum: clean close, before and after VERSION', async () => {
    for (const size of [0, 1, 15, 64 * 1024 + 17, 0x7fffffff, 0xffffffff]) {
      // Before VERSION the limit is 64 KiB (plus header).
      await server.idle();
      const pre = RawConn.connect(server.path);
      pre.send(rawMessage(size, Command.VERSION, Buffer.alloc(16)));
      await closedAndRecovered(pre, `size ${size} before VERSION`);
    }
    for (const size of [0, 15, MAX_XFER + 64 * 1024, 0xffffffff]) {
      const c = await open();
      c.send(rawMessage(size, Command.REGION_READ, read(0, 0, 4)));
      await closedAndRecovered(c, `size ${size} after VERSION`);
    }
  });

  test('random bytes before and after VERSION: never a crash or a hang', async () => {
    for (let seed = 1; seed <= 30; seed++) {
      const c = seed % 2 ? RawConn.connect(server.path) : await open();
      const bytes = randomBytes(seed * 7919, 16 + ((seed * 37) % 2000));
      // Keep the header plausible for some seeds so the body reaches the decoders.
      if (seed % 3 === 0) bytes.writeUInt32LE(bytes.length, 4);
      if (seed % 6 === 0) bytes.writeUInt32LE((bytes.readUInt32LE(8) & ~0xf) >>> 0, 8);
      try {
        c.send(bytes);
        // The server either answers, closes, or waits for more bytes: give it a moment.
        await c.waitClosed(50);
      } finally {
        c.close();
      }
      await server.idle();
      assert.ok(server.alive, `seed ${seed}: server alive`);
    }
    const c = await open();
    await serving(c);
    c.close();
  });

  test('commands before VERSION: EINVAL; bad VERSIONs: EINVAL/ENOTSUP; a second VERSION: EINVAL', async () => {
    await server.idle();
    const c = RawConn.connect(server.path);
    try {
      assert.equal(await c.errnoOf(Command.DEVICE_GET_INFO, deviceInfo()), E.EINVAL);
      assert.equal(await c.errnoOf(Command.REGION_READ, read(0, 0, 4)), E.EINVAL);
      assert.equal(await c.errnoOf(Command.DMA_MAP, dmaMap(0x10000, 0x1000)), E.EINVAL);
      assert.equal(await c.errnoOf(99), E.EINVAL);
      const v = (json: string, major = 0): Buffer => {
        const b = Buffer.alloc(4 + Buffer.byteLength(json) + 1);
        b.writeUInt16LE(major, 0);
        b.writeUInt16LE(1, 2);
        b.write(json, 4);
        return b;
      };
      assert.equal(await c.errnoOf(Command.VERSION, Buffer.alloc(2)), E.EINVAL);
      assert.equal(await c.errnoOf(Command.VERSION, v('{"capabilities":')), E.EINVAL);
      assert.equal(await c.errnoOf(Command.VERSION, v('[]')), E.EINVAL);
      assert.equal(await c.errnoOf(Command.VERSION, v('{"capabilities":{"max_msg_fds":-1}}')), E.EINVAL);
      assert.equal(await c.errnoOf(Command.VERSION, Buffer.from(v('{}')).subarray(0, 6)), E.EINVAL, 'JSON without NUL');
      assert.equal(await c.errnoOf(Command.VERSION, v('{"capabilities":{"pgsizes":512}}')), E.EINVAL, 'no common page size');
      assert.equal(await c.errnoOf(Command.VERSION, v('{}', 1)), E.ENOTSUP, 'major 1');
      // Still not negotiated; a good VERSION works now.
      assert.equal(await c.errnoOf(Command.VERSION, encodeVersion({ major: 0, minor: 1, capabilities: { maxMsgFds: 4 } })), 'ok');
      assert.equal(await c.errnoOf(Command.VERSION, encodeVersion({ major: 0, minor: 1, capabilities: {} })), E.EINVAL);
      await serving(c);
    } finally {
      c.close();
    }
  });

  test('device callbacks that throw or reject: EIO, or the errno they chose; replies stay in order', async () => {
    const c = await open();
    // BAR3: 0 throws, 4 DeviceError(EPERM), 8 rejects, 12 rejects DeviceError(EBUSY), 16 wrong length, 20 slow.
    await expectErrno(c, E.EIO, Command.REGION_READ, [read(3, 0, 4), read(3, 8, 4), read(3, 16, 4)]);
    await expectErrno(c, E.EPERM, Command.REGION_READ, [read(3, 4, 4)]);
    await expectErrno(c, E.EBUSY, Command.REGION_READ, [read(3, 12, 4)]);
    await expectErrno(c, E.EIO, Command.REGION_WRITE, [write(3, 0, le32(1)), write(3, 8, le32(1))]);
    await expectErrno(c, E.EPERM, Command.REGION_WRITE, [write(3, 4, le32(1))]);
    await expectErrno(c, E.EBUSY, Command.REGION_WRITE, [write(3, 12, le32(1))]);
    // A slow read, a failing one and a fast one pipelined: replies in order.
    const ids = [c.command(Command.REGION_READ, read(3, 20, 4)), c.command(Command.REGION_READ, read(3, 0, 4)), c.command(Command.REGION_READ, read(0, 0, 4))];
    const got = [];
    for (let i = 0; i < 3; i++) {
      const f = await c.next();
      assert.ok(f !== 'closed');
      got.push(f);
    }
    assert.deepEqual(got.map((f) => f.header.msgId), ids);
    assert.equal(got[0].payload.readUInt32LE(16), 0x55667788);
    assert.equal(got[1].header.errno, E.EIO);
    assert.ok(!(got[2].header.flags & HeaderFlag.ERROR));
    await serving(c);
    // The client leaves while a slow callback is pending.
    c.command(Command.REGION_READ, read(3, 20, 4));
    c.close();
    await sleep(80);
    assert.ok(server.alive);
    const n = await open();
    await serving(n);
    n.close();
  });

  test('ioeventfd doorbells: a handler that throws does not crash the server; their fds go with the client', async () => {
    const c = await open();
    const fdsBefore = (await server.stats()).fds;
    const head = Buffer.alloc(16);
    head.writeUInt32LE(16, 0);
    head.writeUInt32LE(3, 8); // region 3
    let r = await c.call(Command.DEVICE_GET_REGION_IO_FDS, head);
    assert.ok(r !== 'closed' && !(r.header.flags & HeaderFlag.ERROR));
    const argsz = r.payload.readUInt32LE(0);
    closeAll(r.fds);
    head.writeUInt32LE(argsz, 0);
    r = await c.call(Command.DEVICE_GET_REGION_IO_FDS, head);
    assert.ok(r !== 'closed' && !(r.header.flags & HeaderFlag.ERROR));
    const [throwing, counting] = r.fds;
    assert.equal(r.fds.length, 2);
    try {
      const doorbells = async (): Promise<number> => {
        const f = await c.call(Command.REGION_READ, read(3, 0x200, 4));
        assert.ok(f !== 'closed');
        return f.payload.readUInt32LE(16);
      };
      native.eventfdWrite(counting, 1);
      native.eventfdWrite(counting, 2);
      for (let i = 0; i < 100 && (await doorbells()) < 3; i++) await sleep(5);
      assert.equal(await doorbells(), 3);
      native.eventfdWrite(throwing, 1);
      await sleep(50);
      assert.ok(server.alive, `server alive after a throwing doorbell handler: ${server.stderr}`);
      await serving(c);
      native.eventfdWrite(counting, 1);
      for (let i = 0; i < 100 && (await doorbells()) < 4; i++) await sleep(5);
      assert.equal(await doorbells(), 4, 'doorbells still served');
      assert.equal(await c.errnoOf(Command.DEVICE_GET_REGION_IO_FDS, (head.writeUInt32LE(9, 8), head)), E.EINVAL, 'no region 9');
      assert.equal((await server.stats()).fds, fdsBefore + 2, 'one pair of ioeventfds, created once');
    } finally {
      closeAll(r.fds);
      c.close();
    }
    assert.equal((await server.idle()).fds, idleFds, 'ioeventfds closed with the connection');
  });

  test('device DMA against a client that answers badly or not at all: errors, no crash', async () => {
    const c = await open();
    const engine = (src: number, dst: number, len: number): Buffer => {
      const b = Buffer.alloc(24);
      b.writeBigUInt64LE(BigInt(src), 0);
      b.writeBigUInt64LE(BigInt(dst), 8);
      b.writeBigUInt64LE(BigInt(len), 16);
      return write(4, 0, b);
    };
    const mfd = native.memfd('dst', 4096);
    try {
      // DMA needs Bus Master Enable (PCI command register bit 2).
      assert.equal(await c.errnoOf(Command.REGION_WRITE, write(7, 4, Buffer.from([0x06, 0x00]))), 'ok');
      // 0x10000: fd-less (DMA_READ messages to us); 0x20000: a memfd.
      assert.equal(await c.errnoOf(Command.DMA_MAP, dmaMap(0x10000, 0x1000)), 'ok');
      assert.equal(await c.errnoOf(Command.DMA_MAP, dmaMap(0x20000, 0x1000), { fds: [mfd] }), 'ok');
      /** Starts a copy and returns the DMA_READ request the device sent us. */
      const start = async (): Promise<{ id: number; req: { msgId: number; address: number; count: number } }> => {
        const id = c.command(Command.REGION_WRITE, engine(0x10000, 0x20000, 16));
        const f = await c.next();
        assert.ok(f !== 'closed');
        assert.equal(f.header.command, Command.DMA_READ);
        assert.equal(f.header.flags & HeaderFlag.TYPE_MASK, HeaderFlag.COMMAND);
        return { id, req: { msgId: f.header.msgId, ...decodeDmaReadRequest(f.payload) } };
      };
      const replyTo = async (id: number): Promise<number | 'ok'> => {
        const f = await c.next();
        assert.ok(f !== 'closed');
        assert.equal(f.header.msgId, id);
        return f.header.flags & HeaderFlag.ERROR ? f.header.errno : 'ok';
      };
      // A good answer.
      let { id, req } = await start();
      c.send(encodeDmaReadReply({ address: req.address, count: 16, data: Buffer.alloc(16, 7) }, { msgId: req.msgId, command: Command.DMA_READ, flags: HeaderFlag.REPLY }));
      assert.equal(await replyTo(id), 'ok');
      // An error answer: its errno reaches the REGION_WRITE reply.
      ({ id, req } = await start());
      c.send(encodeMessage({ msgId: req.msgId, command: Command.DMA_READ, flags: HeaderFlag.REPLY | HeaderFlag.ERROR, errno: E.EFAULT }));
      assert.equal(await replyTo(id), E.EFAULT);
      // An answer for the wrong address, then a malformed one: EIO.
      ({ id, req } = await start());
      c.send(encodeDmaReadReply({ address: req.address + 4096, count: 16, data: Buffer.alloc(16) }, { msgId: req.msgId, command: Command.DMA_READ, flags: HeaderFlag.REPLY }));
      assert.equal(await replyTo(id), E.EIO);
      ({ id, req } = await start());
      c.send(encodeMessage({ msgId: req.msgId, command: Command.DMA_READ, flags: HeaderFlag.REPLY }, Buffer.alloc(5)));
      assert.equal(typeof (await replyTo(id)), 'number');
      // No answer: ETIMEDOUT after the server's request timeout (300 ms here); the late answer is dropped.
      const dropped = (await server.stats()).dropped;
      ({ id, req } = await start());
      assert.equal(await replyTo(id), E.ETIMEDOUT);
      c.send(encodeDmaReadReply({ address: req.address, count: 16, data: Buffer.alloc(16) }, { msgId: req.msgId, command: Command.DMA_READ, flags: HeaderFlag.REPLY }));
      await serving(c);
      assert.equal((await server.stats()).dropped, dropped + 1);
      // Leave while the device waits for our answer.
      await start();
      c.close();
      await server.idle();
      assert.ok(server.alive);
    } finally {
      native.close(mfd);
      c.close();
    }
  });

  test('afterwards: the server is alive, holds its baseline fds and mappings, and serves', async () => {
    const s = await server.idle();
    assert.ok(server.alive);
    assert.equal(s.fds, idleFds, `fds back to baseline ${idleFds}`);
    assert.equal(server.memfdMappings(), idleMemfdMaps, 'no client memory left mapped');
    assert.ok(s.maps < idleMaps + 200, `mappings near baseline: ${s.maps} vs ${idleMaps}`);
    const c = await open();
    await serving(c);
    c.close();
  });
});

describe('robustness: device lifecycle hooks that throw', () => {
  test('onConnect, onReset and onDisconnect throwing never crash the server', async () => {
    const server = await ServerProcess.start({ device: 'testdev', env: { MUSER_TEST_HOOKS_THROW: '1' } });
    try {
      for (let i = 0; i < 3; i++) {
        await server.idle();
        const c = RawConn.connect(server.path);
        // VERSION may be answered (the hook runs after the reply) or the connection closed.
        const r = await c.call(Command.VERSION, encodeVersion({ major: 0, minor: 1, capabilities: {} }));
        if (r !== 'closed' && !c.isClosed) {
          const e = await c.errnoOf(Command.DEVICE_RESET);
          assert.ok(e === E.EIO || e === 'closed', `DEVICE_RESET with a throwing onReset: ${e}`);
        }
        c.close();
        await sleep(30);
        assert.ok(server.alive, `server alive after round ${i}: ${server.stderr}`);
      }
      await server.idle();
      assert.ok(server.alive);
    } finally {
      await server.stop();
    }
  });
});
