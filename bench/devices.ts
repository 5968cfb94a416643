/**
 * N bench devices in one process (bench/devices-host.ts), hammered by N
 * concurrent C loadgens with 4-byte REGION_READs over the same timed window.
 * The host and every loadgen run on CPU 0, as the floor does.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BenchError, DEVICES_HOST, LOADGEN, num, rssKb, runJson, type Json } from './proc.js';

export interface DevicesRun {
  n: number;
  /** Sum over the clients of reads in the window / window length. */
  aggregateOpsPerS: number;
  /** Slowest and fastest client, ops/s: fairness. */
  minClientOpsPerS: number;
  maxClientOpsPerS: number;
  p50Us: number;
  p99Us: number;
  baselineRssKb: number;
  idleRssKb: number;
  loadedRssKb: number;
  /** (RSS under load - baseline with 0 devices) / N, KiB. */
  loadedKbPerDevice: number;
  /** (RSS with N idle devices - baseline) / N, KiB. */
  idleKbPerDevice: number;
  /** Largest delay of a client's start past the window's opening (warmup overran), us. */
  maxLateUs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One run: a fresh host with n devices, n loadgens, one window of durationMs. */
export async function devicesRun(n: number, durationMs: number): Promise<DevicesRun> {
  const dir = mkdtempSync(join(tmpdir(), 'muser-bench-devs-'));
  const host = spawn('taskset', ['-c', '0', process.execPath, '--expose-gc', DEVICES_HOST, String(n), dir], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  host.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const lines: Json[] = [];
  const waiters: (() => void)[] = [];
  createInterface({ input: host.stdout }).on('line', (l) => {
    try {
      lines.push(JSON.parse(l) as Json);
    } catch {
      stderr += `\n(stdout) ${l}`;
    }
    waiters.splice(0).forEach((w) => w());
  });
  let exited = false;
  host.on('exit', () => {
    exited = true;
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (event: string): Promise<Json> => {
    const end = Date.now() + 15_000;
    for (;;) {
      const i = lines.findIndex((l) => l.event === event);
      if (i >= 0) return lines.splice(i, 1)[0];
      if (exited) throw new BenchError(`devices-host (${n}) exited before '${event}':\n${stderr}`);
      if (Date.now() > end) throw new BenchError(`devices-host (${n}): no '${event}' in 15 s:\n${stderr}`);
      await Promise.race([new Promise<void>((r) => waiters.push(r)), sleep(100)]);
    }
  };

  try {
    const baseline = num(await next('baseline'), 'rss_kb');
    const ready = await next('ready');
    const idle = num(ready, 'rss_kb');
    const sockets = ready.sockets as unknown as string[];
    const pid = host.pid!;

    // Warm the host's JIT with ~12k reads in all, then leave time to spawn,
    // connect and warm up every client (all on CPU 0) before the window.
    const warmup = Math.max(100, Math.ceil(12_000 / Math.max(1, n)));
    const leadMs = 800 + 25 * n;
    const startAt = process.hrtime.bigint() + BigInt(leadMs) * 1_000_000n;
    const clients = sockets.map((s) =>
      runJson(LOADGEN, [s, 'read', '--size', '4', '--cpu', '0', '--warmup', String(warmup), '--duration-ms', String(durationMs), '--start-at-ns', String(startAt)], 60_000),
    );
    // RSS under load: read from /proc/<pid>/status half way into the window.
    const mid = Number(startAt - process.hrtime.bigint()) / 1e6 + durationMs / 2;
    await sleep(Math.max(0, mid));
    const loaded = rssKb(pid);
    const results = await Promise.all(clients);

    const windowS = durationMs / 1000;
    const perClient = results.map((r) => num(r, 'iters') / windowS);
    const med = (k: string): number => {
      const xs = results.map((r) => num(r, k)).sort((a, b) => a - b);
      return xs[xs.length >> 1];
    };
    return {
      n,
      aggregateOpsPerS: perClient.reduce((a, b) => a + b, 0),
      minClientOpsPerS: Math.min(...perClient),
      maxClientOpsPerS: Math.max(...perClient),
      p50Us: med('p50_us'),
      p99Us: med('p99_us'),
      baselineRssKb: baseline,
      idleRssKb: idle,
      loadedRssKb: loaded,
      loadedKbPerDevice: n > 0 ? (loaded - baseline) / n : 0,
      idleKbPerDevice: n > 0 ? (idle - baseline) / n : 0,
      maxLateUs: Math.max(...results.map((r) => num(r, 'late_us'))),
    };
  } finally {
    host.stdin.end();
    const t = setTimeout(() => host.kill('SIGKILL'), 3000);
    if (!exited) await new Promise((r) => host.once('exit', r));
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  }
}
