// Guest memory from a device program: mapped by the program where the
// client shared memory that cannot shrink, reached through muser where not
// (in pieces, for copies larger than one message), refused while Bus
// Master Enable is clear and once unmapped, and written through mappings
// into migration's dirty log.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, ClientError, dirtyReport, privateMemory, sharedMemory, startDirtyLogging, type GuestMemory } from '../src/client/index.js';
import { Errno } from '../src/device/errors.js';
import { native } from '../src/native/index.js';
import { startDeviceProgram } from '../src/program/index.js';
import { serve, type Server } from '../src/server/server.js';

const DMA = fileURLToPath(new URL('../../test/fixtures/programs/dma.py', import.meta.url));
const IOVA = 0x4000_0000;
const SIZE = 8 << 20;

async function withDevice(memory: GuestMemory, body: (c: Client, server: Server) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'muser-dma-'));
  const program = await startDeviceProgram({ command: ['python3', DMA], log: 'silent' });
  const server = serve(program.device, join(dir, 'dma.sock'), { log: 'silent' });
  const client = await Client.connect(join(dir, 'dma.sock'));
  try {
    await client.dmaMap(IOVA, memory);
    await client.setBusMaster();
    await body(client, server);
  } finally {
    client.close();
    server.close();
    memory.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function u64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

const u32 = (v: number): Buffer => Buffer.from(Uint32Array.of(v).buffer);

async function copy(c: Client, at: number, length: number): Promise<number> {
  await c.regionWrite(0, 0x00, u64(IOVA + at));
  await c.regionWrite(0, 0x08, u32(length));
  await c.regionWrite(0, 0x10, u32(1));
  return (await c.regionRead(0, 0x0c, 4)).readUInt32LE(0);
}

function fillPattern(memory: GuestMemory, at: number, length: number): void {
  for (let i = 0; i < length; i++) memory.bytes[at + i] = (i * 13 + (i >> 12)) & 0xff;
}

/** A memfd the client could shrink (no F_SEAL_SHRINK): muser reaches it by pread/pwrite, and must not hand it to the program either. */
function unsealedMemory(size: number): GuestMemory {
  const fd = native.memfd('unsealed-guest', size, false);
  const m = native.mmap(fd, 0, size, true);
  if (typeof m === 'number') throw new Error(`mmap: errno ${-m}`);
  return { bytes: new Uint8Array(m[0]), fd, close: () => void (native.munmap(m[1], m[0]), native.close(fd)) };
}

const KINDS = [
  ['shared (a sealed memfd)', sharedMemory, 1],
  ['private (no fd)', privateMemory, 2],
  ['unsealed (a memfd that may shrink)', unsealedMemory, 2],
] as const;

for (const [kind, make, status] of KINDS) {
  test(`a 3 MiB copy by the program in ${kind} memory: ${status === 1 ? 'through its own mapping' : 'through muser, in pieces of at most 1 MiB'}, byte for byte`, async () => {
    const memory = make(SIZE);
    await withDevice(memory, async (c) => {
      const n = 3 << 20;
      fillPattern(memory, 0x1000, n);
      assert.equal(await copy(c, 0x1000, n), status);
      assert.ok(Buffer.from(memory.bytes.subarray(0x1000 + n, 0x1000 + 2 * n)).equals(Buffer.from(memory.bytes.subarray(0x1000, 0x1000 + n))));
    });
  });
}

test("the program's mapping obeys Bus Master Enable and DMA_UNMAP: EPERM while clear, EFAULT once unmapped", async () => {
  const memory = sharedMemory(SIZE);
  await withDevice(memory, async (c) => {
    assert.equal(await copy(c, 0, 4096), 1);
    await c.setBusMaster(false);
    const refused = await copy(c, 0, 4096).catch((e: unknown) => e);
    assert.ok(refused instanceof ClientError && refused.errno === Errno.EPERM, `EPERM, got ${String(refused)}`);
    await c.setBusMaster(true);
    assert.equal(await copy(c, 0, 4096), 1);
    await c.dmaUnmap(IOVA, SIZE); // answered once the program let go of its mapping
    const gone = await copy(c, 0, 4096).catch((e: unknown) => e);
    assert.ok(gone instanceof ClientError && gone.errno === Errno.EFAULT, `EFAULT, got ${String(gone)}`);
  });
});

test("writes through the program's mapping reach the dirty log, even when the report comes while the program is still busy", async () => {
  const memory = sharedMemory(SIZE);
  await withDevice(memory, async (c) => {
    await startDirtyLogging(c);
    assert.deepEqual(await dirtyReport(c, IOVA, SIZE), []);
    await c.regionWrite(0, 0x00, u64(IOVA + 0x5000));
    await c.regionWrite(0, 0x14, u32(1)); // a timer writes 0xaa x 16, then holds on 0.5 s
    const deadline = Date.now() + 5000;
    while (memory.bytes[0x5000] !== 0xaa) {
      assert.ok(Date.now() < deadline, 'the program never wrote');
      await new Promise((r) => setTimeout(r, 5));
    }
    // The program has not reported the write yet: the report must wait for it (SYNC).
    assert.notEqual((await c.regionRead(0, 0x0c, 4)).readUInt32LE(0), 4, 'the timer is still running');
    assert.deepEqual(await dirtyReport(c, IOVA, SIZE), [IOVA + 0x5000]);
    assert.equal((await c.regionRead(0, 0x0c, 4)).readUInt32LE(0), 4, 'the report waited for the program');
  });
});
