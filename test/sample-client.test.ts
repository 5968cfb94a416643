/**
 * `muser sample-client <socket>` against `muser run timer <socket>`: three
 * processes (the client starts the destination server itself). It must
 * exercise every command, migrate, see the destination's interrupt and
 * exit 0.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { runCli as run, startTimer, type ChildServer } from './helpers/timer-process.js';

describe('muser sample-client', () => {
  it('exercises a timer device, migrates it, and the destination delivers the interrupt', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muser-sc-'));
    const sock = join(dir, 'timer.sock');
    let server: ChildServer | undefined;
    try {
      server = await startTimer(sock);
      const r = await run(['sample-client', sock]);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      for (const want of [
        'VERSION',
        'DEVICE_GET_INFO: flags 0x3, 9 regions, 5 IRQ indexes',
        'sparse mmap 0x0+0x1000 0x3000+0x1000, with an fd',
        'DEVICE_GET_IRQ_INFO INTx: count 1',
        'DEVICE_GET_REGION_IO_FDS',
        'dead:beef subsystem cafe:babe',
        'DEVICE_RESET',
        'REGION_WRITE_MULTI',
        'without an fd (DMA_READ/DMA_WRITE messages)',
        'DEVICE_SET_IRQS',
        'DMA_LOGGING_START',
        'interrupt: INTx fired',
        '8 DMA_READ/DMA_WRITE messages',
        'DMA_LOGGING_REPORT: 1 dirty page(s), 0x10000 among them',
        'DMA_UNMAP',
        'migration: source: PRE_COPY',
        'migration: source: STOP_COPY',
        'migration: destination: RUNNING',
        'stop-copy: 16392 bytes',
        'BAR1: equal on source and destination',
        'interrupt: delivered by the destination',
        'source: stopped and silent',
        'OK',
      ]) {
        assert.ok(r.stdout.includes(want), `missing "${want}" in:\n${r.stdout}`);
      }
      // The destination server it started is gone, its socket removed.
      assert.equal(existsSync(`${sock}_migrated`), false);
    } finally {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails with a message and a non-zero exit when nothing listens', async () => {
    const r = await run(['sample-client', join(tmpdir(), `muser-nobody-${process.pid}.sock`)]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /muser: /);
  });
});
