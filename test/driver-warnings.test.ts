/**
 * What a guest's driver gets wrong shows in the server's log: a virtio-blk
 * request that fails and an NVMe I/O command that fails each say why
 * (warn level, rate-limited per device), on the main thread and from queue
 * threads; an admin command's failure stays in the NVMe error log page.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, mock, test } from 'node:test';
import type { Client } from '../src/client/index.js';
import { memfdBackend, nvmeController, serve, virtioBlk, type Server } from '../src/index.js';
import { RateLimitedWarnings } from '../src/device/rate-limited-warnings.js';
import { connectClient } from './helpers/raw.js';
import { recordingLogger } from './helpers/logs.js';
import { NvmeDriver, PAGE } from './helpers/nvme-driver.js';
import { VirtioDriver } from './helpers/virtio-driver.js';
import { S_IOERR, S_OK, T_IN, blk } from './helpers/virtio-blk-driver.js';
import { until } from './helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'muser-warn-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const MiB = 1024 * 1024;

let open: { server: Server; client: Client; driver: { close(): void } } | undefined;
afterEach(() => {
  open?.driver.close();
  open?.client.close();
  open?.server.close();
  open = undefined;
});

const warnings = (lines: string[]): string[] => lines.filter((l) => l.startsWith('warn: '));

describe('virtio-blk: a failed request says why', () => {
  for (const workers of [0, 1]) {
    test(`a read past the disk's end: IOERR to the driver, the reason in the log${workers ? ' (queue on a worker thread)' : ''}`, async () => {
      const { log, lines } = recordingLogger();
      const server = serve(virtioBlk({ backend: memfdBackend(MiB), workers }), join(dir, `blk${serial++}.sock`), { log });
      const client = await connectClient(server.path);
      const d = await VirtioDriver.open(client);
      open = { server, client, driver: d };
      await d.start(1);
      assert.equal((await blk(d, 0, T_IN, 0, { inLen: 512 })).status, S_OK);
      assert.deepEqual(warnings(lines), [], 'a good request logs nothing');
      assert.equal((await blk(d, 0, T_IN, MiB / 512, { inLen: 512 })).status, S_IOERR);
      await until(() => warnings(lines).length > 0, 'the warning');
      assert.match(warnings(lines)[0], /^warn: queue 0, request \d+: IOERR: .*(range|beyond|end)/i);
    });
  }

  test('a driver repeating its mistake is shown 5 times per window', async () => {
    const { log, lines } = recordingLogger();
    const server = serve(virtioBlk({ backend: memfdBackend(MiB) }), join(dir, `blk${serial++}.sock`), { log });
    const client = await connectClient(server.path);
    const d = await VirtioDriver.open(client);
    open = { server, client, driver: d };
    await d.start(1);
    for (let i = 0; i < 12; i++) assert.equal((await blk(d, 0, T_IN, MiB / 512 + i, { inLen: 512 })).status, S_IOERR);
    assert.equal(warnings(lines).length, 5);
  });
});

describe('NVMe: a failed I/O command says why; an admin command does not', () => {
  for (const workers of [0, 2]) {
    test(`a read past the namespace: LBA_OUT_OF_RANGE, the reason in the log${workers ? ' (queues on worker threads)' : ''}`, async () => {
      const { log, lines } = recordingLogger();
      const server = serve(nvmeController({ namespaces: [memfdBackend(MiB)], queues: 2, workers }), join(dir, `nvme${serial++}.sock`), { log });
      const client = await connectClient(server.path);
      const d = await NvmeDriver.open(client);
      open = { server, client, driver: d };
      await d.enable();
      await d.createIoQueues(2);
      // Get Log Page of a log the controller does not have: the host probes like this; no warning.
      const buf = d.alloc(PAGE);
      const admin = await d.run(0, { opcode: 0x02, nsid: 0xffffffff, prp1: buf, cdw10: 0xc0 | (((PAGE / 4 - 1) & 0xffff) << 16) });
      assert.notEqual(admin.status, 0, 'the admin command failed');
      const blocks = MiB / 512;
      const io = await d.rw(2, false, blocks, 1);
      assert.equal(io.cqe.sc, 0x80, 'LBA Out of Range');
      await until(() => warnings(lines).length > 0, 'the warning');
      assert.equal(warnings(lines).length, 1, `only the I/O command: ${JSON.stringify(lines)}`);
      assert.match(warnings(lines)[0], new RegExp(`^warn: SQ 2 command ${io.cqe.cid} \\(nsid 1\\) failed with LBA_OUT_OF_RANGE: LBAs ${blocks}\\+1 beyond ${blocks}`));
    });
  }
});

test('rate-limited warnings: the rest are counted and reported when the next window opens', () => {
  mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  try {
    const { log, lines } = recordingLogger();
    const w = new RateLimitedWarnings(() => log, 'driver errors');
    for (let i = 0; i < 8; i++) w.warn(`mistake ${i}`);
    assert.deepEqual(lines, [0, 1, 2, 3, 4].map((i) => `warn: mistake ${i}`));
    mock.timers.tick(10_000);
    w.warn('mistake 8');
    assert.deepEqual(lines.slice(5), ['warn: 3 more driver errors in the last 10 s not shown', 'warn: mistake 8']);
    let connected = false;
    const offline = new RateLimitedWarnings(() => (connected ? log : undefined), 'x');
    offline.warn('dropped while no client is connected');
    connected = true;
    offline.warn('shown');
    assert.equal(lines.at(-1), 'warn: shown');
    assert.ok(!lines.includes('warn: dropped while no client is connected'));
  } finally {
    mock.timers.reset();
  }
});
