/**
 * The native addon keeps its state per instance, so it loads in worker
 * threads beside the main thread, each with its own receive buffer and
 * busy-poll handle, and a worker that used it exits cleanly.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { native } from '../src/native/index.js';

function runWorker(): Promise<{ result: unknown; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./helpers/native-worker.js', import.meta.url));
    let result: unknown;
    w.on('message', (m) => {
      result = m;
      void w.terminate();
    });
    w.on('error', reject);
    w.on('exit', (exitCode) => resolve({ result, exitCode }));
  });
}

test('the addon loads and polls in two workers at once, and the main thread still uses it', async () => {
  const mainStarts = native.spinState()[1];
  const runs = await Promise.all([runWorker(), runWorker()]);
  for (const { result } of runs) {
    const r = result as { data: string; count: number; spinStarts: number };
    assert.deepEqual({ data: r.data, count: r.count }, { data: 'from the worker', count: 3 });
    // The worker's own loop busy-polled (more than once when a loaded machine let its 1 ms window lapse between events).
    assert.ok(r.spinStarts >= 1, `spin starts ${r.spinStarts}`);
  }
  // The workers' busy polling is theirs: the main thread's state did not move.
  assert.equal(native.spinState()[1], mainStarts);
  const [a, b] = native.socketpair();
  try {
    assert.equal(native.sendmsg(a, Buffer.from('x')), 1);
  } finally {
    native.close(a);
    native.close(b);
  }
});
