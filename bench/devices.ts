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
import { fig, type Fig, type Iterations, type Judged, type Target } from './figures.js';
import { BenchError, DEVICES_HOST, LOADGEN, median, num, pingpong, rssKb, runJson, type Json } from './proc.js';

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

/** The N-devices figure over all rounds: per N, medians of the rounds. */
export interface DevicesSummary {
  windowMs: number;
  /** The 4 B REGION_READ pingpong floor, run before each round. */
  floor: Fig[];
  runs: DevicesRun[][];
  byN: {
    n: number;
    aggregateOpsPerS: number;
    vsFloor: number;
    vsOne: number;
    minClientOpsPerS: number;
    maxClientOpsPerS: number;
    p50Us: number;
    p99Us: number;
    loadedKbPerDevice: number;
    idleKbPerDevice: number;
    baselineRssKb: number;
    maxLateUs: number;
  }[];
  target: Judged;
}

/**
 * `rounds` rounds of: the 4 B REGION_READ pingpong floor, then one run per
 * device count in `counts`, each a window of `windowMs`.
 */
export async function measureDevices(rounds: number, counts: readonly number[], windowMs: number, it: Iterations, log: (s: string) => void): Promise<DevicesSummary> {
  const floor: Fig[] = [];
  const runs: DevicesRun[][] = [];
  for (let r = 0; r < rounds; r++) {
    log(`round ${r + 1}/${rounds}: devices ${counts.join(', ')}`);
    floor.push(fig(await pingpong(['--size-req', '32', '--size-rep', '36', '--iters', it(30_000)])));
    const round: DevicesRun[] = [];
    for (const n of counts) round.push(await devicesRun(n, windowMs));
    runs.push(round);
  }
  const byN = counts.map((n, i) => {
    const rs = runs.map((round) => round[i]);
    const m = (f: (x: DevicesRun) => number): number => median(rs.map(f));
    return {
      n,
      aggregateOpsPerS: m((x) => x.aggregateOpsPerS),
      vsFloor: median(rs.map((x, r) => x.aggregateOpsPerS / floor[r].ops)),
      vsOne: median(rs.map((x, r) => x.aggregateOpsPerS / runs[r][0].aggregateOpsPerS)),
      minClientOpsPerS: m((x) => x.minClientOpsPerS),
      maxClientOpsPerS: m((x) => x.maxClientOpsPerS),
      p50Us: m((x) => x.p50Us),
      p99Us: m((x) => x.p99Us),
      loadedKbPerDevice: m((x) => x.loadedKbPerDevice),
      idleKbPerDevice: m((x) => x.idleKbPerDevice),
      baselineRssKb: m((x) => x.baselineRssKb),
      maxLateUs: Math.max(...rs.map((x) => x.maxLateUs)),
    };
  });
  const last = byN[byN.length - 1];
  const t: Target = { kind: 'ratio', min: 0.9, text: `>= 0.90 of 1 device` };
  return { windowMs, floor, runs, byN, target: { ...t, value: last.vsOne, pass: last.vsOne >= t.min } };
}
