/**
 * The NBD backend against real servers: nbdkit (memory and file plugins,
 * delay and error filters) and qemu-nbd serving qcow2, over UNIX sockets
 * and TCP on 127.0.0.1. The shared backend suite runs over NBD; then many
 * requests in flight, server errors, refusals, and a server killed and
 * restarted mid-I/O without losing an acknowledged write.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { BlockError, NbdConnectError, openNbdBackend, type BlockBackend, type NbdBackend } from '../src/index.js';
import { openBlockBackend } from '../src/samples/disk.js';
import { blockBackendSuite, SUITE_DISK_SIZE } from './helpers/block-suite.js';
import { HAVE_NBDKIT, NbdServerProcess, SKIP_NBDKIT, SKIP_QEMU_NBD, type Listen } from './helpers/nbd-servers.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-nbd-'));
const servers: NbdServerProcess[] = [];
after(async () => {
  for (const s of servers) await s.stop();
  rmSync(dir, { recursive: true, force: true });
});

const BLOCKSIZE_4K = { filters: ['blocksize-policy'], params: ['blocksize-minimum=4096', 'blocksize-preferred=4096', 'blocksize-error-policy=error'] };

let sockets = 0;
function unixSocket(): Listen {
  return { unix: join(dir, `nbd-${sockets++}.sock`) };
}

async function nbdkit(listen: Listen, plugin: string[], options?: Parameters<typeof NbdServerProcess.nbdkit>[2]): Promise<NbdServerProcess> {
  const s = await NbdServerProcess.nbdkit(listen, plugin, options);
  servers.push(s);
  return s;
}

/** One nbdkit memory server per (transport, read-only); each disk starts by zeroing it all. */
function memoryKind(name: string, listen: () => Listen, runs: number, serverOptions: { extra?: string[]; filters?: string[]; params?: string[] } = {}) {
  const cache = new Map<boolean, Promise<NbdServerProcess>>();
  const server = (readOnly: boolean) => {
    let s = cache.get(readOnly);
    if (!s) {
      s = nbdkit(listen(), ['memory', String(SUITE_DISK_SIZE)], { readOnly, ...serverOptions });
      cache.set(readOnly, s);
    }
    return s;
  };
  return {
    name,
    runs,
    async create(size: number, readOnly = false): Promise<BlockBackend> {
      assert.equal(size, SUITE_DISK_SIZE);
      const disk = await openNbdBackend((await server(readOnly)).uri);
      if (!readOnly) await disk.writeZeroes(0, size);
      return disk;
    },
  };
}

if (HAVE_NBDKIT) {
  blockBackendSuite(memoryKind('nbd (nbdkit memory, unix socket)', unixSocket, 40));
  blockBackendSuite(memoryKind('nbd (nbdkit memory, tcp 127.0.0.1)', () => ({ tcp: true }), 10));
  // --no-sr: no structured replies, so reads come back as simple replies.
  blockBackendSuite(memoryKind('nbd (nbdkit memory, simple replies only)', unixSocket, 10, { extra: ['--no-sr'] }));
  // A server that refuses requests not aligned to 4 KiB: the backend reads, merges and writes whole blocks.
  blockBackendSuite(memoryKind('nbd (nbdkit memory, 4 KiB minimum block size enforced)', unixSocket, 20, BLOCKSIZE_4K));
} else {
  test('nbd backend suite', { skip: SKIP_NBDKIT }, () => {});
}

describe('nbd against nbdkit', { skip: SKIP_NBDKIT }, () => {
  test('the export\'s transmission flags decide read-only and capabilities', async () => {
    const full = await nbdkit(unixSocket(), ['memory', '1M']);
    const disk = await openNbdBackend(full.uri);
    assert.equal(disk.size, 1 << 20);
    assert.deepEqual(disk.capabilities, { flush: true, discard: true, writeZeroes: true });
    assert.equal(disk.readOnly, false);
    await disk.close();
    // nozero and a read-only server: no write-zeroes, no trim, EROFS on writes.
    const ro = await nbdkit(unixSocket(), ['memory', '1M'], { readOnly: true, filters: ['nozero'] });
    const rdisk = await openNbdBackend(ro.uri);
    assert.equal(rdisk.readOnly, true);
    assert.equal(rdisk.capabilities.writeZeroes, false);
    await assert.rejects(async () => rdisk.write(0, [new Uint8Array(512)]), (e: unknown) => e instanceof BlockError && e.code === 'EROFS');
    await rdisk.close();
  });

  test('muser run virtio-blk --nbd opens the export; it does not combine with --image or --size', async () => {
    const s = await nbdkit(unixSocket(), ['memory', '2M']);
    const disk = await openBlockBackend({ nbd: s.uri, readOnly: true });
    assert.equal(disk.size, 2 << 20);
    assert.equal(disk.readOnly, true);
    await disk.close();
    await assert.rejects(openBlockBackend({ nbd: s.uri, size: '1M', readOnly: false }), /one of --image, --size or --nbd/);
    await assert.rejects(openBlockBackend({ nbd: 'nbds://x/y', readOnly: false }), /TLS/);
  });

  test('many requests in flight on one connection, all answered with the right data (delay filter)', async () => {
    const s = await nbdkit(unixSocket(), ['memory', '4M'], { filters: ['delay'], params: ['rdelay=5ms', 'wdelay=5ms'] });
    const disk = await openNbdBackend(s.uri);
    const n = 256;
    const blocks = Array.from({ length: n }, () => randomBytes(4096));
    const writes = blocks.map((b, i) => disk.write(i * 4096, [b]));
    assert.equal(disk.inFlight, n, 'every write is on the wire before any reply');
    await Promise.all(writes);
    const back = blocks.map(() => Buffer.alloc(4096));
    const reads = back.map((b, i) => disk.read(i * 4096, [b.subarray(0, 1000), b.subarray(1000)]));
    assert.equal(disk.inFlight, n);
    await Promise.all(reads);
    for (let i = 0; i < n; i++) assert.ok(back[i].equals(blocks[i]), `block ${i}`);
    await disk.close();
  });

  test('a 4 KiB minimum block size: concurrent sub-block writes into one block all land (read-modify-write under a lock)', async () => {
    const s = await nbdkit(unixSocket(), ['memory', '1M'], BLOCKSIZE_4K);
    const disk = await openNbdBackend(s.uri);
    assert.equal(disk.minBlockSize, 4096);
    // Eight sectors of block 1, plus writes straddling blocks 2/3 and 3/4, all at once.
    const writes = Array.from({ length: 8 }, (_, i) => disk.write(4096 + i * 512, [Buffer.alloc(512, i + 1)]));
    writes.push(disk.write(3 * 4096 - 100, [Buffer.alloc(200, 0xa0)]), disk.write(4 * 4096 - 1000, [Buffer.alloc(1000, 0xb0)]));
    writes.push(disk.writeZeroes(3 * 4096 + 100, 50), disk.discard(4096 * 8 + 7, 9000));
    await Promise.all(writes);
    const back = Buffer.alloc(4 * 4096);
    await disk.read(4096, [back]);
    for (let i = 0; i < 8; i++) assert.ok(back.subarray(i * 512, (i + 1) * 512).every((v) => v === i + 1), `sector ${i} of block 1`);
    const at = (o: number) => back[o - 4096];
    assert.equal(at(3 * 4096 - 100), 0xa0);
    assert.equal(at(3 * 4096 + 99), 0xa0);
    assert.equal(at(3 * 4096 + 100), 0, 'write-zeroes inside a block');
    assert.equal(at(3 * 4096 + 150), 0);
    assert.equal(at(4 * 4096 - 1000), 0xb0);
    assert.equal(at(4 * 4096 - 1), 0xb0);
    assert.equal(at(4 * 4096), 0, 'past the straddling write');
    await disk.close();
  });

  test('requests larger than the server\'s payload limit are split', async () => {
    const s = await nbdkit(unixSocket(), ['memory', '80M']);
    const disk = await openNbdBackend(s.uri);
    const big = randomBytes(70 << 20);
    await disk.write(512, [big.subarray(0, 3), big.subarray(3)]);
    const back = Buffer.alloc(big.length);
    await disk.read(512, [back]);
    assert.ok(back.equals(big));
    await disk.close();
  });

  test('server errors reach the caller as typed errors, and the disk goes on (error filter)', async () => {
    const trigger = join(dir, 'fail-writes');
    const s = await nbdkit(unixSocket(), ['memory', '1M'], { filters: ['error'], params: ['error-pwrite=ENOSPC', 'error-pwrite-rate=100%', `error-pwrite-file=${trigger}`, 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}.r`] });
    const disk = await openNbdBackend(s.uri);
    await disk.write(0, [Buffer.alloc(512, 7)]);
    writeFileSync(trigger, '');
    await assert.rejects(async () => disk.write(0, [Buffer.alloc(512, 8)]), (e: unknown) => e instanceof BlockError && e.code === 'ENOSPC');
    writeFileSync(`${trigger}.r`, '');
    await assert.rejects(async () => disk.read(0, [Buffer.alloc(512)]), (e: unknown) => e instanceof BlockError && e.code === 'EIO' && /EIO/.test(e.message));
    rmSync(trigger);
    rmSync(`${trigger}.r`);
    const b = Buffer.alloc(512);
    await disk.read(0, [b]);
    assert.ok(b.every((v) => v === 7), 'the failed write left the old data');
    await disk.write(0, [Buffer.alloc(512, 9)]);
    await disk.read(0, [b]);
    assert.ok(b.every((v) => v === 9));
    assert.equal((disk as NbdBackend).reconnects, 0, 'errors are answers, not lost connections');
    await disk.close();
  });

  test('a server that requires TLS is refused with a clear error', async () => {
    const psk = join(dir, 'keys.psk');
    writeFileSync(psk, `alice:${'ab'.repeat(16)}\n`);
    const s = await nbdkit(unixSocket(), ['memory', '1M'], { extra: ['--tls=require', `--tls-psk=${psk}`] });
    await assert.rejects(openNbdBackend(s.uri), (e: unknown) => e instanceof NbdConnectError && e.failure === 'refused' && /TLS/.test(e.message));
  });

  test('no server, or a peer that is not an NBD server, fails with NbdConnectError', async () => {
    await assert.rejects(openNbdBackend(`nbd+unix:///?socket=${join(dir, 'nobody.sock')}`), (e: unknown) => e instanceof NbdConnectError && e.failure === 'connect');
    const fake = createServer((c) => c.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    fake.unref();
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const port = (fake.address() as { port: number }).port;
    await assert.rejects(openNbdBackend(`nbd://127.0.0.1:${port}/`), (e: unknown) => e instanceof NbdConnectError && e.failure === 'protocol' && /not an NBD server/.test(e.message));
    fake.close();
    // NBDMAGIC followed by the oldstyle magic: an old server we do not speak to.
    const old = createServer((c) => c.end(Buffer.from('4e42444d414749430000420281861253', 'hex')));
    old.unref();
    await new Promise<void>((r) => old.listen(0, '127.0.0.1', r));
    const oldPort = (old.address() as { port: number }).port;
    await assert.rejects(openNbdBackend(`nbd://127.0.0.1:${oldPort}/`), (e: unknown) => e instanceof NbdConnectError && e.failure === 'protocol' && /oldstyle/.test(e.message));
    old.close();
  });

  test('server killed and restarted mid-I/O: I/O resumes, no acknowledged write is lost (checksum)', async () => {
    const image = join(dir, 'crash.img');
    const blockSize = 4096;
    const blocks = 512;
    writeFileSync(image, '');
    truncateSync(image, blockSize * blocks);
    const s = await nbdkit(unixSocket(), ['file', image], { filters: ['delay'], params: ['wdelay=2ms'] });
    const disk = await openNbdBackend(s.uri, { reconnect: { timeoutMs: 30_000, delayMs: 20, maxDelayMs: 200 } });
    // Each worker owns its blocks and writes them one after another, so the
    // last acknowledged content of every block is well defined.
    const model = new Map<number, Buffer>();
    const workers = 16;
    const rounds = 3;
    let acked = 0;
    let restarted: Promise<void> | undefined;
    const work = Array.from({ length: workers }, async (_, w) => {
      for (let round = 0; round < rounds; round++) {
        for (let blk = w; blk < blocks; blk += workers) {
          const data = randomBytes(blockSize);
          await disk.write(blk * blockSize, [data]);
          model.set(blk, data);
          acked++;
          if (acked === 400 && restarted === undefined) restarted = s.restart();
        }
      }
    });
    await Promise.all(work);
    await restarted;
    assert.ok(disk.reconnects >= 1, `reconnected ${disk.reconnects} times`);
    const expected = Buffer.alloc(blockSize * blocks);
    for (const [blk, data] of model) data.copy(expected, blk * blockSize);
    const back = Buffer.alloc(expected.length);
    await disk.read(0, [back]);
    const sum = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    assert.equal(sum(back), sum(expected), 'the disk as read over NBD');
    await disk.flush();
    assert.equal(sum(readFileSync(image)), sum(expected), 'the image file itself');
    await disk.close();
  });

  test('a server that stays away fails waiting requests with EIO after the deadline; a later request reconnects', async () => {
    const s = await nbdkit(unixSocket(), ['memory', '1M']);
    const disk = await openNbdBackend(s.uri, { reconnect: { timeoutMs: 300, delayMs: 20, maxDelayMs: 50 } });
    await s.kill();
    await assert.rejects(async () => disk.read(0, [Buffer.alloc(512)]), (e: unknown) => e instanceof BlockError && e.code === 'EIO' && /no connection/.test(e.message));
    await s.start();
    const b = Buffer.alloc(512, 1);
    await disk.read(0, [b]);
    assert.ok(b.every((v) => v === 0));
    assert.equal(disk.reconnects, 1);
    await disk.close();
  });
});

describe('nbd against qemu-nbd', { skip: SKIP_QEMU_NBD }, () => {
  test('a qcow2 image over TCP and a UNIX socket: writes persist across connections and into the image', async () => {
    const image = join(dir, 'disk.qcow2');
    const made = spawnSync('qemu-img', ['create', '-f', 'qcow2', image, '8M']);
    assert.equal(made.status, 0, made.stderr?.toString());
    const data = randomBytes(1 << 20);
    for (const listen of [{ tcp: true } as const, unixSocket()]) {
      const s = await NbdServerProcess.qemuNbd(listen, image, 'qcow2', 'vol');
      servers.push(s);
      const disk = await openNbdBackend(s.uri);
      assert.equal(disk.size, 8 << 20);
      assert.deepEqual(disk.capabilities, { flush: true, discard: true, writeZeroes: true });
      await disk.write(1 << 20, [data], { fua: true });
      await disk.writeZeroes(0, 64 << 10);
      await disk.flush();
      await disk.close();
      const again = await openNbdBackend(s.uri);
      const back = Buffer.alloc(data.length);
      await again.read(1 << 20, [back]);
      assert.ok(back.equals(data));
      // Unallocated clusters around written data (qemu-nbd may answer with hole chunks).
      const mixed = Buffer.alloc(4 << 20, 0xee);
      await again.read(0, [mixed.subarray(0, 12345), mixed.subarray(12345)]);
      assert.ok(mixed.subarray(0, 1 << 20).every((v) => v === 0), 'zeroed and unallocated space reads as zeros');
      assert.ok(mixed.subarray(1 << 20, 2 << 20).equals(data));
      assert.ok(mixed.subarray(2 << 20).every((v) => v === 0));
      await again.close();
      await s.stop();
    }
    const raw = spawnSync('qemu-img', ['convert', '-O', 'raw', image, join(dir, 'disk.raw')]);
    assert.equal(raw.status, 0, raw.stderr?.toString());
    assert.ok(readFileSync(join(dir, 'disk.raw')).subarray(1 << 20, 2 << 20).equals(data), 'the data is in the qcow2 image');
  });

  test('an unknown export name is refused with a clear error', async () => {
    const image = join(dir, 'named.qcow2');
    spawnSync('qemu-img', ['create', '-f', 'qcow2', image, '1M']);
    const s = await NbdServerProcess.qemuNbd(unixSocket(), image, 'qcow2', 'vol');
    servers.push(s);
    await assert.rejects(openNbdBackend(s.uriFor('nope')), (e: unknown) => e instanceof NbdConnectError && e.failure === 'refused' && /unknown export 'nope'|export 'nope'/.test(e.message));
  });
});
