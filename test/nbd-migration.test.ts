/**
 * Live migration of virtio-blk between two `muser run virtio-blk --nbd`
 * processes on the same NBD export: each process has its own connection
 * to the export, so the disk's data never moves; only device state does.
 * I/O runs before, during pre-copy and after the switch.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { getMigrationState, migrate, MigrationState } from '../src/client/index.js';
import { openNbdBackend } from '../src/index.js';
import { connectClient } from './helpers/raw.js';
import { NbdServerProcess, SKIP_NBDKIT } from './helpers/nbd-servers.js';
import { S_OK, T_IN, T_OUT, blk } from './helpers/virtio-blk-driver.js';
import { pattern } from './helpers/bytes.js';
import { VirtioDriver } from './helpers/virtio-driver.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const DISK = 16 << 20;
const dir = mkdtempSync(join(tmpdir(), 'muser-nbdmig-'));
const children: ChildProcess[] = [];
let server: NbdServerProcess | undefined;
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** `muser run virtio-blk SOCK --nbd URI` in a child process; resolves once it listens. */
async function device(name: string, uri: string): Promise<{ path: string; child: ChildProcess }> {
  const path = join(dir, `${name}.sock`);
  const child = spawn(process.execPath, [CLI, 'run', 'virtio-blk', path, '--nbd', uri, '--queues', '2'], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  for (let i = 0; i < 500 && !existsSync(path); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  if (!existsSync(path)) throw new Error(`${name} did not listen: ${stderr}`);
  return { path, child };
}

test('virtio-blk migrates between two muser processes on one NBD export, without copying the disk', { skip: SKIP_NBDKIT }, async () => {
  server = await NbdServerProcess.nbdkit({ unix: join(dir, 'nbd.sock') }, ['memory', String(DISK)]);
  const source = await device('source', server.uri);
  const destination = await device('destination', server.uri);
  const a = await connectClient(source.path);
  const b = await connectClient(destination.path);
  const d = await VirtioDriver.open(a);
  try {
    await d.start(2);
    assert.equal((await blk(d, 0, T_OUT, 0, { out: pattern(65536, 1) })).status, S_OK);
    await d.attachTo(b);
    let preCopyIo: Promise<number> | undefined;
    const result = await migrate(a, b, {
      onStep(step) {
        if (step === 'source: PRE_COPY') preCopyIo = blk(d, 1, T_OUT, 1024, { out: pattern(8192, 2) }).then((r) => r.status);
      },
    });
    assert.equal(await preCopyIo, S_OK);
    assert.equal(await getMigrationState(b), MigrationState.RUNNING);
    const moved = result.preCopyBytes + result.stopCopyBytes;
    assert.ok(moved < DISK / 16, `device state only: ${moved} bytes migrated for a ${DISK}-byte disk`);

    d.useClient(b);
    assert.deepEqual((await blk(d, 0, T_IN, 0, { inLen: 65536 })).data, pattern(65536, 1), 'written before migration');
    assert.deepEqual((await blk(d, 1, T_IN, 1024, { inLen: 8192 })).data, pattern(8192, 2), 'written during pre-copy');
    assert.equal((await blk(d, 0, T_OUT, 2048, { out: pattern(4096, 3) })).status, S_OK);
  } finally {
    d.close();
    a.close();
    b.close();
  }
  // The destination's write is on the export itself, as a third client sees it.
  const check = await openNbdBackend(server.uri);
  const back = Buffer.alloc(4096);
  await check.read(2048 * 512, [back]);
  assert.deepEqual(back, Buffer.from(pattern(4096, 3)));
  await check.close();
});
