// Declarative register maps: access rules on the map itself, then a device
// built on one, served over a real socket and driven by the client library.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineRegisters, DeviceError, serve, type Logger, type RegisterEntry } from '../src/index.js';
import { Client, ClientError } from '../src/client/index.js';
import { counterDevice } from '../src/samples/counter.js';

const EINVAL = 22;

function recorder(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const keep = (m: string): void => void lines.push(m);
  return { log: { debug: keep, info: keep, warn: keep, error: keep }, lines };
}

/** Reads synchronously (every hook in these tables is synchronous). */
function readNow(map: { read(o: number, l: number, c: undefined): unknown }, offset: number, length: number): number[] {
  const v = map.read(offset, length, undefined);
  assert.ok(v instanceof Uint8Array, 'a map with synchronous hooks answers synchronously');
  return [...v];
}

function writeNow(map: { write(o: number, d: Uint8Array, c: undefined): unknown }, offset: number, bytes: number[]): void {
  assert.equal(map.write(offset, Buffer.from(bytes), undefined), undefined);
}

describe('register map: access rules', () => {
  test('reset values, rw storage, narrower reads and byte-merged narrower writes', () => {
    const regs = defineRegisters<undefined>([
      { name: 'id', offset: 0, width: 4, access: 'ro', reset: 0x12345678 },
      { name: 'data', offset: 4, width: 4, reset: 0xaabbccdd },
      { name: 'wide', offset: 8, width: 8, reset: 0x0102030405060708n, write: (v) => void (v satisfies bigint) },
    ]);
    assert.deepEqual(readNow(regs, 0, 4), [0x78, 0x56, 0x34, 0x12]);
    assert.deepEqual(readNow(regs, 2, 2), [0x34, 0x12]);
    assert.deepEqual(readNow(regs, 3, 1), [0x12]);
    writeNow(regs, 5, [0x11]);
    assert.equal(regs.get('data'), 0xaabb11dd, 'only the written byte lane changed');
    writeNow(regs, 6, [0x22, 0x33]);
    assert.equal(regs.get('data'), 0x332211dd);
    writeNow(regs, 0, [0, 0, 0, 0]);
    assert.equal(regs.get('id'), 0x12345678, 'writes to a read-only register are ignored');
    assert.deepEqual(readNow(regs, 8, 8), [8, 7, 6, 5, 4, 3, 2, 1]);
    writeNow(regs, 12, [0xff, 0xff, 0xff, 0xff]);
    assert.equal(regs.get64('wide'), 0xffffffff05060708n);
    assert.throws(() => regs.get('wide'), TypeError);
    regs.reset();
    assert.equal(regs.get('data'), 0xaabbccdd);
    assert.equal(regs.get64('wide'), 0x0102030405060708n);
  });

  test('hook values: negative numbers wrap to the width, non-integers are an EIO error', () => {
    let v = -1;
    const regs = defineRegisters<undefined>([
      { name: 'half', offset: 0, width: 2, read: () => v },
      { name: 'word', offset: 4, width: 4, read: () => v },
      { name: 'top', offset: 8, width: 4, reset: 0xffffffff },
    ]);
    assert.deepEqual(readNow(regs, 0, 2), [0xff, 0xff]);
    assert.deepEqual(readNow(regs, 4, 4), [0xff, 0xff, 0xff, 0xff]);
    assert.deepEqual(readNow(regs, 6, 2), [0xff, 0xff]);
    writeNow(regs, 10, [0x00, 0x80]);
    assert.equal(regs.get('top'), 0x8000ffff, 'upper half merged, value stays unsigned');
    v = 1.5;
    assert.throws(() => regs.read(0, 2, undefined), (e: unknown) => e instanceof DeviceError && e.errno === 5);
  });

  test('an access spanning registers is split; unused offsets read zero and ignore writes', () => {
    const seen: string[] = [];
    const regs = defineRegisters<undefined>([
      { name: 'a', offset: 0, width: 1, read: () => (seen.push('a'), 0xa1) },
      { name: 'b', offset: 1, width: 1, read: () => (seen.push('b'), 0xb2) },
      { name: 'c', offset: 4, width: 2, reset: 0xc3c4 },
    ]);
    assert.deepEqual(readNow(regs, 0, 8), [0xa1, 0xb2, 0, 0, 0xc4, 0xc3, 0, 0]);
    assert.deepEqual(seen, ['a', 'b'], 'each read hook ran once, in address order');
    writeNow(regs, 2, [9, 9]);
    assert.deepEqual(readNow(regs, 2, 2), [0, 0]);
    assert.deepEqual(readNow(regs, 0x100, 4), [0, 0, 0, 0], 'past the last register');
  });

  test('misaligned or too narrow accesses are refused with EINVAL before anything runs', () => {
    const writes: number[] = [];
    const regs = defineRegisters<undefined>([
      { name: 'first', offset: 0, width: 1, write: (v) => void writes.push(v) },
      { name: 'ctrl', offset: 4, width: 4, write: (v) => void writes.push(v) },
      { name: 'doorbell', offset: 8, width: 4, access: 'wo', widths: [4], write: (v) => void writes.push(v) },
    ]);
    const refused = (f: () => unknown): void => {
      assert.throws(f, (e: unknown) => e instanceof DeviceError && e.errno === EINVAL);
    };
    refused(() => regs.write(5, Buffer.from([1, 2]), undefined)); // 2 bytes at +1
    refused(() => regs.read(4, 3, undefined)); // 3 bytes
    refused(() => regs.write(6, Buffer.alloc(4), undefined)); // ctrl's upper half is fine, then 2 bytes of doorbell are not
    refused(() => regs.write(8, Buffer.from([1]), undefined)); // doorbell takes only 4-byte accesses
    refused(() => regs.write(0, Buffer.alloc(10), undefined)); // reaches doorbell with 2 bytes
    assert.deepEqual(writes, [], 'a refused access wrote no register, not even the first one it covers');
    writeNow(regs, 8, [1, 0, 0, 0]);
    assert.deepEqual(writes, [1]);
  });

  test('wo, rw1c, rc and writable masks', () => {
    const commands: number[] = [];
    const cleared: number[] = [];
    const regs = defineRegisters<undefined>([
      { name: 'status', offset: 0, width: 1, access: 'ro', read: () => 0x5a },
      { name: 'command', offset: 0, width: 1, access: 'wo', reset: 0, write: (v) => void commands.push(v) },
      { name: 'irq', offset: 4, width: 4, access: 'rw1c', write: (v) => void cleared.push(v) },
      { name: 'event', offset: 8, width: 2, access: 'rc' },
      { name: 'mode', offset: 12, width: 4, writable: 0x0000ffff, reset: 0xabcd0000 },
      { name: 'go', offset: 16, width: 4, access: 'wo', reset: 0 },
    ]);
    assert.deepEqual(readNow(regs, 0, 1), [0x5a], 'the read-only half of a shared offset');
    writeNow(regs, 0, [3]);
    assert.deepEqual(commands, [3], 'the write-only half');
    regs.set('irq', 0b1111);
    writeNow(regs, 4, [0b0101]);
    assert.equal(regs.get('irq'), 0b1010);
    assert.deepEqual(cleared, [0b0101]);
    regs.set('event', 7);
    assert.deepEqual(readNow(regs, 8, 2), [7, 0]);
    assert.deepEqual(readNow(regs, 8, 2), [0, 0], 'cleared by the read');
    writeNow(regs, 12, [0xff, 0xff, 0xff, 0xff]);
    assert.equal(regs.get('mode'), 0xabcdffff, 'bits outside `writable` kept');
    regs.set('go', 0x11223344);
    writeNow(regs, 16, [1]);
    assert.equal(regs.get('go'), 1, 'a narrow write to a write-only register fills the rest from its reset value');
    assert.deepEqual(readNow(regs, 16, 4), [0, 0, 0, 0], 'write-only reads zero');
  });

  test('blocks: memory of their own, or hooks; cleared on reset', () => {
    const regs = defineRegisters<undefined>([
      { name: 'ram', offset: 0x10, size: 16 },
      { name: 'fifo', offset: 0x20, size: 4, read: (o, n) => Buffer.alloc(n, 0x40 + o), write: () => {} },
    ]);
    writeNow(regs, 0x13, [1, 2, 3]);
    assert.deepEqual(readNow(regs, 0x12, 5), [0, 1, 2, 3, 0]);
    assert.deepEqual(readNow(regs, 0x21, 2), [0x41, 0x41]);
    regs.reset();
    assert.deepEqual(readNow(regs, 0x13, 3), [0, 0, 0]);
  });

  test('async hooks: the access completes in address order once every hook settled', async () => {
    const order: string[] = [];
    const { log, lines } = recorder();
    const regs = defineRegisters<undefined>(
      [
        { name: 'slow', offset: 0, width: 4, async write(v) { await new Promise((r) => setImmediate(r)); order.push(`slow=${v}`); } },
        { name: 'fast', offset: 4, width: 4, write: (v) => void order.push(`fast=${v}`) },
        { name: 'late', offset: 8, width: 4, read: async () => 0x01020304 },
      ],
      { log },
    );
    const data = Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]);
    const w = regs.write(0, data, undefined);
    assert.ok(w instanceof Promise);
    data.fill(0xee); // the server reuses its receive buffer once a plain write callback returns
    await w;
    assert.deepEqual(order, ['slow=1', 'fast=2'], 'later parts see the bytes as written, not what the buffer holds now');
    assert.deepEqual(lines, ['write reg=0x0 name=slow val=0x00000001', 'write reg=0x4 name=fast val=0x00000002']);
    assert.deepEqual([...(await regs.read(8, 4, undefined))], [4, 3, 2, 1]);
  });

  test('a table with mistakes is refused when it is defined', () => {
    const bad: RegisterEntry<undefined>[][] = [
      [{ name: 'x', offset: 2, width: 4 }],
      [{ name: 'x', offset: 0, width: 4 }, { name: 'y', offset: 2, width: 2 }],
      [{ name: 'x', offset: 0, width: 4 }, { name: 'x', offset: 4, width: 4 }],
      [{ name: 'x', offset: 0, width: 1, reset: 0x100 }],
      [{ name: 'x', offset: 0, width: 3 as 4 }],
      [{ name: 'x', offset: 0, width: 2, widths: [4] }],
      [{ name: 'x', offset: 0, width: 4, access: 'rw' }, { name: 'y', offset: 0, width: 4, access: 'wo' }],
    ];
    for (const table of bad) assert.throws(() => defineRegisters(table), /register|overlap/, JSON.stringify(table));
    assert.throws(() => defineRegisters([{ name: 'x', offset: 0x1000, width: 4 }]).bar({ size: 4096 }), RangeError);
  });

  test('windows: hooks get the offset within, the width and the value; widths and alignment as for registers', () => {
    const rung: string[] = [];
    let selected = 0x0123456789abcdefn;
    const regs = defineRegisters<undefined>([
      { name: 'ctl', offset: 0, width: 4 },
      { name: 'doorbells', offset: 0x10, size: 16, window: true, access: 'wo', widths: [4], write: (off, v, w) => void rung.push(`${off}:${v}:${w}`) },
      { name: 'selected', offset: 0x20, size: 8, window: true, widths: [4, 8], read: (off, w) => (w === 8 ? selected : Number((selected >> BigInt(off * 8)) & 0xffffffffn)), write: (off, v, w) => {
        if (w === 8) selected = v as bigint;
        else selected = (selected & ~(0xffffffffn << BigInt(off * 8))) | (BigInt(v) << BigInt(off * 8));
      } },
      { name: 'status', offset: 0x28, size: 2, window: true, access: 'ro', read: () => -2 },
    ]);
    writeNow(regs, 0x18, [7, 0, 0, 0]);
    writeNow(regs, 0x1c, [0xff, 0xff, 0xff, 0xff]);
    assert.deepEqual(rung, ['8:7:4', '12:4294967295:4'], 'doorbell 2 and 3 rung with 32-bit values');
    assert.deepEqual(readNow(regs, 0x10, 4), [0, 0, 0, 0], 'a write-only window reads zero');
    assert.throws(() => regs.write(0x12, Buffer.from([1, 0]), undefined), (e: unknown) => e instanceof DeviceError && e.errno === EINVAL, 'a width the window does not take');
    assert.throws(() => regs.write(0x12, Buffer.from([1, 0, 0, 0]), undefined), (e: unknown) => e instanceof DeviceError && e.errno === EINVAL, 'misaligned within the window');
    assert.equal(rung.length, 2, 'a refused access rings nothing');
    assert.deepEqual(readNow(regs, 0x20, 8), [0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01], 'an 8-byte read takes a bigint');
    assert.deepEqual(readNow(regs, 0x24, 4), [0x67, 0x45, 0x23, 0x01]);
    writeNow(regs, 0x24, [1, 0, 0, 0]);
    assert.equal(selected, 0x1_89abcdefn, 'the hook merged the high half itself');
    writeNow(regs, 0x20, [8, 7, 6, 5, 4, 3, 2, 1]);
    assert.equal(selected, 0x0102030405060708n, 'an 8-byte write hands a bigint');
    assert.deepEqual(readNow(regs, 0x28, 2), [0xfe, 0xff], 'a negative value is cut to the access width');
    writeNow(regs, 0x28, [0, 0]); // read-only: ignored
    // An access over a register and a window is split at the boundary, each part served by its own.
    assert.deepEqual(readNow(regs, 0x20, 4), [8, 7, 6, 5]);
    assert.throws(() => regs.get('selected'), TypeError, 'a window stores no value to get');
    assert.deepEqual(regs.layout().map((e) => e.name), ['ctl', 'doorbells', 'selected', 'status']);
  });

  test('a window with mistakes is refused when it is defined, naming the field', () => {
    const write = (): void => undefined;
    const cases: [unknown, RegExp][] = [
      [{ name: 'w', offset: 0, size: 8, window: 'yes', write }, /register w: window must be true/],
      [{ name: 'w', offset: 0, size: 8, window: true, width: 4, write }, /register w: a window has a size, not a width/],
      [{ name: 'w', offset: 0, size: 8, window: true }, /register w: a window needs a read or a write hook/],
      [{ name: 'w', offset: 0, size: 8, window: true, reset: 1, write }, /register w: a window stores nothing, so it takes no 'reset'/],
      [{ name: 'w', offset: 2, size: 8, window: true, widths: [4], write }, /register w: offset 0x2 is not aligned to its widest access \(4 bytes\)/],
      [{ name: 'w', offset: 0, size: 2, window: true, widths: [4], write }, /register w: an access width is wider than the window's 2 bytes/],
      [{ name: 'w', offset: 0, size: 0, window: true, write }, /register w: window size 0 is not a byte count/],
      [{ name: 'w', offset: 0, size: 8, window: true, widths: [3], write }, /register w: widths must list access widths of 1, 2, 4 or 8 bytes/],
      [{ name: 'w', offset: 0, size: 8, window: true, access: 'rc', write }, /register w: access 'rc' is not one of/],
    ];
    for (const [entry, message] of cases) {
      assert.throws(() => defineRegisters([entry as RegisterEntry<undefined>]), message, JSON.stringify(entry));
    }
    assert.throws(() => defineRegisters<undefined>([{ name: 'r', offset: 4, width: 4 }, { name: 'w', offset: 0, size: 8, window: true, write }]), /overlap/);
  });

  test('stored values: saved by name, put back checked; windows and hooked blocks have none', () => {
    const regs = defineRegisters<undefined>([
      { name: 'a', offset: 0, width: 4 },
      { name: 'b', offset: 8, width: 8 },
      { name: 'ram', offset: 0x10, size: 4 },
      { name: 'fifo', offset: 0x14, size: 4, read: () => Buffer.alloc(4), write: () => undefined },
    ]);
    regs.set('a', 0xdeadbeef);
    regs.set('b', 0x1122334455667788n);
    writeNow(regs, 0x10, [1, 2, 3, 4]);
    const saved = regs.saveValues();
    assert.deepEqual(saved, { a: 'deadbeef', b: '1122334455667788', ram: Buffer.from([1, 2, 3, 4]).toString('base64') });
    regs.reset();
    assert.throws(() => regs.loadValues({ ...saved, fifo: 'AAAAAA==' }), /no register or memory block named fifo/);
    assert.throws(() => regs.loadValues({ ...saved, a: '1ffffffff' }), /a does not fit in 4 bytes/);
    assert.throws(() => regs.loadValues({ ...saved, ram: 'AA==' }), /block ram has 1 bytes, 4 wanted/);
    assert.equal(regs.get('a'), 0, 'a refused load changes nothing');
    regs.loadValues(saved);
    assert.equal(regs.get('a'), 0xdeadbeef);
    assert.equal(regs.get64('b'), 0x1122334455667788n);
    assert.deepEqual(readNow(regs, 0x10, 4), [1, 2, 3, 4]);
  });

  test('a logger at debug level traces every access by register name', () => {
    const { log, lines } = recorder();
    const regs = defineRegisters<undefined>(
      [
        { name: 'in0_7', offset: 1, width: 1, access: 'ro', read: () => 0 },
        { name: 'out', offset: 4, width: 2 },
        { name: 'poll', offset: 8, width: 1, trace: false },
      ],
      { log },
    );
    readNow(regs, 1, 1);
    writeNow(regs, 4, [0x01, 0x02]);
    writeNow(regs, 1, [7]);
    readNow(regs, 8, 1);
    readNow(regs, 0x20, 1);
    assert.deepEqual(lines, [
      'read reg=0x1 name=in0_7 val=0x00',
      'write reg=0x4 name=out val=0x0201',
      'write reg=0x1 name=in0_7 val=0x07 ignored (read-only)',
      'read reg=0x20 name=unused val=0x00',
    ]);
  });
});

describe('register map behind a BAR, over a socket', () => {
  test('the counter sample: narrow writes increment, bad widths get EINVAL, unused offsets read zero', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'muser-regs-')), 'counter.sock');
    const server = serve(counterDevice(), path, { log: 'silent' });
    const client = await Client.connect(path);
    try {
      await client.regionWrite(0, 4, Buffer.from([1])); // was EIO before the register map
      await client.regionWrite(0, 4, Buffer.from([2, 0]));
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 3);
      assert.deepEqual([...(await client.regionRead(0, 0, 2))], [3, 0], 'a narrower read of count');
      await assert.rejects(client.regionWrite(0, 5, Buffer.from([1, 0])), (e: unknown) => e instanceof ClientError && e.errno === EINVAL);
      await assert.rejects(client.regionRead(0, 1, 2), (e: unknown) => e instanceof ClientError && e.errno === EINVAL);
      await assert.rejects(client.regionWrite(0, 8, Buffer.alloc(4)), (e: unknown) => e instanceof ClientError && e.errno === EINVAL, 'dma_address takes only whole 8-byte writes');
      assert.deepEqual([...(await client.regionRead(0, 0x100, 8))], [0, 0, 0, 0, 0, 0, 0, 0]);
      await client.regionWrite(0, 0x100, Buffer.from([0xff])); // ignored
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 3, 'the connection still serves');
    } finally {
      client.close();
      server.close();
    }
  });

  test('registers go back to their reset values on DEVICE_RESET and FLR, with no onReset wiring', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'muser-regs-')), 'dev.sock');
    const registers = defineRegisters([{ name: 'scratch', offset: 0, width: 4, reset: 0x5555 }]);
    const inRegion = defineRegisters([{ name: 'other', offset: 0, width: 2, reset: 0x77 }]);
    let seenByOnReset = -1;
    const server = serve(
      {
        identity: { vendorId: 0x1234, deviceId: 0x0001 },
        bars: { 0: registers.bar({ size: 256 }) },
        regions: { 9: inRegion.bar({ size: 16 }) },
        capabilities: [{ id: 'pcie', flr: true }],
        onReset: () => void (seenByOnReset = registers.get('scratch')),
      },
      path,
      { log: 'silent' },
    );
    const client = await Client.connect(path);
    try {
      await client.regionWrite(0, 0, Buffer.from([1, 2, 3, 4]));
      await client.regionWrite(9, 0, Buffer.from([1, 2]));
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 0x04030201);
      await client.reset();
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 0x5555);
      assert.equal((await client.regionRead(9, 0, 2)).readUInt16LE(0), 0x77, 'a map behind a device region too');
      assert.equal(seenByOnReset, 0x5555, 'maps are reset before the device\'s onReset runs');
      await client.regionWrite(0, 0, Buffer.from([1, 2, 3, 4]));
      const devctl = server.device.config.findCapability('pcie')!.offset + 8;
      const now = (await client.regionRead(7, devctl, 2)).readUInt16LE(0);
      await client.regionWrite(7, devctl, Buffer.from([now & 0xff, (now >> 8) | 0x80])); // Device Control: Initiate FLR
      assert.equal((await client.regionRead(0, 0, 4)).readUInt32LE(0), 0x5555, 'a Function Level Reset too');
    } finally {
      client.close();
      server.close();
    }
  });
});
