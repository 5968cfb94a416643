/**
 * `npm run bench`: muser against its floors, in one run.
 *
 * Builds the C programs (bench/c), serves the bench sample with the CLI
 * pinned to CPU 0, and measures each figure beside its floor: a raw AF_UNIX
 * ping-pong of the same message sizes (bench/bin/pingpong), memcpy for guest
 * memory reads, one device for N devices. Floor and muser runs alternate
 * (floor, muser, floor, muser, ...) for ROUNDS rounds; each ratio is the
 * median of the per-round ratios, so it compares runs made under the same
 * conditions. Prints a table and writes bench/results/latest.json.
 *
 * A missed target is a result, not a failure: the exit status is non-zero
 * only when something broke (a program failed, a protocol error, ...).
 *
 * Environment: BENCH_ROUNDS (default 3), BENCH_SCALE (iteration multiplier,
 * default 1), BENCH_ONLY (comma list of: single, views, devices, cross, blk,
 * nvme, file, program; file needs fio and is skipped with a note without it).
 *
 * `--quick` (CI's run): every part once with the fewest iterations (rounds 1,
 * scale 0.01 unless the environment says otherwise), in well under a minute on
 * an idle machine; its figures are too short to mean anything, so it writes
 * bench/results/quick.json and leaves latest.json to full runs. Like a full
 * run it fails only when something broke.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureBlk, measureBlkDoorbells, measureBlkWorkers, type BlkRow, type BlkWorkerRow } from './blk.js';
import { measureNvme, measureNvmeDoorbells, type NvmeRow } from './nvme.js';
import { doorbellTable, type DoorbellRow } from './doorbells.js';
import { haveFio, measureFile, type FileResult } from './file.js';
import { measureCross, summarizeCross, CLIENT_CPU, SERVER_CPU } from './cross.js';
import { devicesRun, type DevicesRun } from './devices.js';
import { BenchError, buildC, CliServer, loadAverage, machine, median, num, pingpong, ROOT, type Json } from './proc.js';
import { measureViews, type ViewsResult } from './views.js';
import { formatProgram, measureProgram, type ProgramRow } from './program.js';

const QUICK = parseArgs(process.argv.slice(2));
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? (QUICK ? 1 : 3)));
const SCALE = Math.max(0.01, Number(process.env.BENCH_SCALE ?? (QUICK ? 0.01 : 1)));
const ONLY = new Set((process.env.BENCH_ONLY ?? 'single,views,devices,cross,blk,nvme,file,program').split(','));
const VIEW_BYTES = 256 << 20;
const DEVICE_COUNTS = [1, 16, 64];
const DEVICE_WINDOW_MS = Math.round(1500 * Math.min(1, SCALE * 2));

const it = (n: number): string => String(Math.max(1, Math.round(n * SCALE)));

/** True for `--quick`; anything else is a usage error. */
function parseArgs(args: string[]): boolean {
  const unknown = args.filter((a) => a !== '--quick');
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown argument ${unknown[0]}\nusage: npm run bench [-- --quick]\n`);
    process.exit(2);
  }
  return args.includes('--quick');
}

/** One measured figure: a rate and its latency percentiles. */
interface Fig {
  ops: number;
  p50: number;
  p99: number;
}

interface Target {
  /** Minimum ratio to the floor, or minimum absolute rate. */
  kind: 'ratio' | 'abs';
  min: number;
  text: string;
}

interface Case {
  key: string;
  label: string;
  unit: string;
  floorNote: string;
  floor(): Promise<Fig>;
  muser(s: CliServer): Promise<Fig>;
  target?: Target;
}

const fig = (j: Json, rate = 'ops_per_s'): Fig => ({ ops: num(j, rate), p50: num(j, 'p50_us'), p99: num(j, 'p99_us') });

function rwCase(key: string, label: string, op: 'read' | 'write', size: number, req: number, rep: number, iters: number, target?: Target): Case {
  return {
    key,
    label,
    unit: 'ops/s',
    floorNote: `pingpong ${req}/${rep}`,
    floor: async () => fig(await pingpong(['--size-req', String(req), '--size-rep', String(rep), '--iters', it(iters)])),
    muser: async (s) => fig(await s.loadgen(op, ['--size', String(size), '--iters', it(iters)])),
    target,
  };
}

const CASES: Case[] = [
  rwCase('read_4', 'REGION_READ 4 B', 'read', 4, 32, 36, 40_000, { kind: 'ratio', min: 0.9, text: '>= 0.90 of floor' }),
  rwCase('read_4k', 'REGION_READ 4 KiB', 'read', 4096, 32, 4128, 30_000),
  rwCase('write_4', 'REGION_WRITE 4 B', 'write', 4, 36, 32, 40_000),
  rwCase('write_4k', 'REGION_WRITE 4 KiB', 'write', 4096, 4128, 32, 30_000),
  {
    key: 'dma_map_unmap',
    label: 'DMA_MAP+UNMAP 1 MiB memfd',
    unit: 'pairs/s',
    floorNote: 'pingpong --fd 48/16 + 40/40',
    // Two round trips: 1 / (t_map + t_unmap); latencies add.
    floor: async () => {
      const map = fig(await pingpong(['--fd', '--iters', it(10_000)]));
      const unmap = fig(await pingpong(['--size-req', '40', '--size-rep', '40', '--iters', it(10_000)]));
      return { ops: 1 / (1 / map.ops + 1 / unmap.ops), p50: map.p50 + unmap.p50, p99: map.p99 + unmap.p99 };
    },
    muser: async (s) => fig(await s.loadgen('dma', ['--iters', it(8_000)])),
    target: { kind: 'ratio', min: 0.65, text: '>= 0.65 of floor' },
  },
  {
    key: 'irq_latency',
    label: 'doorbell -> IRQ eventfd',
    unit: 'irqs/s',
    floorNote: 'pingpong --irqs 1 36/32',
    floor: async () => fig(await pingpong(['--irqs', '1', '--iters', it(20_000)])),
    muser: async (s) => fig(await s.loadgen('irq-latency', ['--iters', it(20_000)])),
  },
  {
    key: 'irq_burst',
    label: 'IRQ burst (1000 per doorbell)',
    unit: 'irqs/s',
    floorNote: 'pingpong --irqs 1000',
    floor: async () => fig(await pingpong(['--irqs', '1000', '--iters', it(400)]), 'irqs_per_s'),
    muser: async (s) => fig(await s.loadgen('irq-burst', ['--count', '1000', '--iters', it(400)]), 'irqs_per_s'),
    target: { kind: 'abs', min: 1e6, text: '>= 1 M irqs/s' },
  },
  {
    key: 'write_multi',
    label: 'REGION_WRITE_MULTI 200 x 4 B',
    unit: 'writes/s',
    floorNote: 'pingpong 4824/24 reply 1 in 8, x200',
    floor: async () => {
      const j = await pingpong(['--size-req', '4824', '--size-rep', '24', '--reply-every', '8', '--iters', it(8_000)]);
      return { ops: num(j, 'ops_per_s') * 200, p50: num(j, 'p50_us'), p99: num(j, 'p99_us') };
    },
    muser: async (s) => fig(await s.loadgen('write-multi', ['--entries', '200', '--reply-every', '8', '--iters', it(8_000)]), 'writes_per_s'),
  },
];

interface Row {
  key: string;
  label: string;
  unit: string;
  floorNote: string;
  muser: Fig;
  floor: Fig;
  ratio: number;
  runs: { muser: Fig; floor: Fig; ratio: number }[];
  target?: Target & { value: number; pass: boolean };
}

const medFig = (fs: Fig[]): Fig => ({ ops: median(fs.map((f) => f.ops)), p50: median(fs.map((f) => f.p50)), p99: median(fs.map((f) => f.p99)) });

function judge(t: Target | undefined, ratio: number, ops: number): Row['target'] {
  if (!t) return undefined;
  const value = t.kind === 'ratio' ? ratio : ops;
  return { ...t, value, pass: value >= t.min };
}

async function single(dir: string, log: (s: string) => void): Promise<Row[]> {
  const server = await CliServer.start(join(dir, 'bench.sock'));
  try {
    // Untimed warm-up: let the server's JIT settle before round 1.
    await server.loadgen('read', ['--size', '4', '--iters', it(20_000)]);
    const runs = new Map<string, { muser: Fig; floor: Fig; ratio: number }[]>(CASES.map((c) => [c.key, []]));
    for (let r = 0; r < ROUNDS; r++) {
      log(`round ${r + 1}/${ROUNDS}: single device`);
      for (const c of CASES) {
        const floor = await c.floor();
        const muser = await c.muser(server);
        runs.get(c.key)!.push({ floor, muser, ratio: muser.ops / floor.ops });
      }
    }
    return CASES.map((c) => {
      const rs = runs.get(c.key)!;
      const muser = medFig(rs.map((x) => x.muser));
      const ratio = median(rs.map((x) => x.ratio));
      return { key: c.key, label: c.label, unit: c.unit, floorNote: c.floorNote, muser, floor: medFig(rs.map((x) => x.floor)), ratio, runs: rs, target: judge(c.target, ratio, muser.ops) };
    });
  } finally {
    await server.stop();
  }
}

interface DevicesSummary {
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
  target: Target & { value: number; pass: boolean };
}

async function devices(log: (s: string) => void): Promise<DevicesSummary> {
  const floor: Fig[] = [];
  const runs: DevicesRun[][] = [];
  for (let r = 0; r < ROUNDS; r++) {
    log(`round ${r + 1}/${ROUNDS}: devices ${DEVICE_COUNTS.join(', ')}`);
    floor.push(fig(await pingpong(['--size-req', '32', '--size-rep', '36', '--iters', it(30_000)])));
    const round: DevicesRun[] = [];
    for (const n of DEVICE_COUNTS) round.push(await devicesRun(n, DEVICE_WINDOW_MS));
    runs.push(round);
  }
  const byN = DEVICE_COUNTS.map((n, i) => {
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
  return { windowMs: DEVICE_WINDOW_MS, floor, runs, byN, target: { ...t, value: last.vsOne, pass: last.vsOne >= t.min } };
}

// ---- formatting -----------------------------------------------------------

function si(x: number): string {
  if (!Number.isFinite(x)) return '-';
  const [d, s] = x >= 1e9 ? [1e9, 'G'] : x >= 1e6 ? [1e6, 'M'] : x >= 1e3 ? [1e3, 'k'] : [1, ''];
  const v = x / d;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)}${s ? ' ' + s : ''}`;
}
const us = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const lat = (f: Fig): string => `${us(f.p50)} / ${us(f.p99)}`;
const mib = (kb: number): string => `${(kb / 1024).toFixed(2)} MiB`;

/** A titled table of doorbells by message vs in a mapped page (see doorbells.ts). */
function doorbellLines(title: string, rows: DoorbellRow[]): string[] {
  const t = doorbellTable(rows, si);
  return [title, 'server cpu: the server process\'s CPU over each run (100% = one CPU); ratios are medians of per-round ratios, the pair run back to back', table(t.head, t.rows)];
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd();
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

const verdict = (t?: { text: string; pass: boolean }): string => (t ? `${t.text}  ${t.pass ? 'PASS' : 'MISS'}` : '');

// ---- main -------------------------------------------------------------------

async function main(): Promise<void> {
  const t0 = Date.now();
  const log = (s: string): void => void process.stderr.write(`bench: ${s} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
  buildC();
  const m = machine();
  const date = new Date().toISOString();
  const dir = mkdtempSync(join(tmpdir(), 'muser-bench-'));
  let rows: Row[] = [];
  let views: (ViewsResult & { ratio: number; viewsMedian: number; memcpyMedian: number; target: Target & { value: number; pass: boolean } }) | undefined;
  let devs: DevicesSummary | undefined;
  let cross: ReturnType<typeof summarizeCross> | undefined;
  let blk: BlkRow[] | undefined;
  let blkWorkers: BlkWorkerRow[] | undefined;
  let nvme: NvmeRow[] | undefined;
  let blkDoorbells: DoorbellRow[] | undefined;
  let nvmeDoorbells: DoorbellRow[] | undefined;
  let fileBacked: FileResult | undefined;
  let fileSkipped = false;
  let program: ProgramRow[] | undefined;
  const loadAtStart = loadAverage();
  try {
    if (ONLY.has('single')) rows = await single(dir, log);
    if (ONLY.has('views')) {
      log(`guest memory reads through views (${VIEW_BYTES >> 20} MiB)`);
      const v = await measureViews(VIEW_BYTES, ROUNDS, 5);
      const ratio = median(v.ratios);
      const t: Target = { kind: 'ratio', min: 0.9, text: '>= 0.90 of memcpy' };
      views = { ...v, ratio, viewsMedian: median(v.viewsGBps), memcpyMedian: median(v.memcpyGBps), target: { ...t, value: ratio, pass: ratio >= t.min } };
    }
    if (ONLY.has('devices')) devs = await devices(log);
    if (ONLY.has('cross')) cross = summarizeCross(await measureCross(dir, ROUNDS, it, log));
    if (ONLY.has('blk')) {
      blk = await measureBlk(dir, ROUNDS, SCALE, log);
      blkWorkers = await measureBlkWorkers(dir, ROUNDS, SCALE, log);
      blkDoorbells = await measureBlkDoorbells(dir, ROUNDS, SCALE, log);
    }
    if (ONLY.has('nvme')) {
      nvme = await measureNvme(dir, ROUNDS, SCALE, log);
      nvmeDoorbells = await measureNvmeDoorbells(dir, ROUNDS, SCALE, log);
    }
    if (ONLY.has('file')) {
      if (haveFio()) fileBacked = await measureFile(dir, ROUNDS, SCALE, log);
      else fileSkipped = true;
    }
    if (ONLY.has('program')) program = await measureProgram(dir, ROUNDS, it, log);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const elapsedS = (Date.now() - t0) / 1000;

  const out: string[] = [];
  out.push(`muser bench${QUICK ? ' --quick (a smoke run: too short for its figures to mean anything)' : ''}  ${date}  commit ${m.commit}${m.dirty ? ' (+ uncommitted changes)' : ''}`);
  out.push(`machine: ${m.cpu}, ${m.nproc} CPUs, ${(m.memTotalMiB / 1024).toFixed(1)} GiB, ${m.kernel}, node ${m.node}`);
  out.push(`load average (1 min): ${loadAtStart.toFixed(2)} at start, ${loadAverage().toFixed(2)} at end`);
  out.push(`single-CPU parts: server and clients pinned to CPU 0; each figure is the median of ${ROUNDS} interleaved runs (floor, muser, ...);`);
  out.push(`ratio = median of per-round muser/floor ratios; latencies p50 / p99 in us`);
  out.push('');
  const tableRows: string[][] = rows.map((r) => [r.label, `${si(r.muser.ops)} ${r.unit}`, lat(r.muser), `${si(r.floor.ops)} ${r.unit}`, lat(r.floor), r.ratio.toFixed(2), verdict(r.target)]);
  if (views) {
    tableRows.push(['guest memory reads via views', `${views.viewsMedian.toFixed(2)} GB/s`, '', `${views.memcpyMedian.toFixed(2)} GB/s`, '', views.ratio.toFixed(2), verdict(views.target)]);
  }
  if (tableRows.length) {
    out.push(table(['measurement', 'muser', 'p50 / p99', 'floor', 'p50 / p99', 'ratio', 'target'], tableRows));
    out.push('');
    out.push('floors (measured in this run, pinned like muser):');
    const w = Math.max(...rows.map((r) => r.label.length));
    for (const r of rows) out.push(`  ${r.label.padEnd(w)}  ${r.floorNote}`);
    if (views) {
      out.push(`  ${'guest memory reads'.padEnd(w)}  TypedArray.set out of another ${VIEW_BYTES >> 20} MiB memfd mapped MAP_SHARED in this process into the same plain buffer (fastest of source offsets 0..64 B)`);
      out.push(`views: ${VIEW_BYTES >> 20} MiB memfd DMA-mapped by an in-process client, device copies it out through ${views.viewCount} view(s); first pass (server page faults) ${views.firstPassGBps.toFixed(2)} GB/s`);
    }
    out.push('');
  }
  if (devs) {
    out.push(`N devices in one process: N concurrent C loadgens, 4 B REGION_READ, ${devs.windowMs} ms window, host and clients on CPU 0`);
    out.push(
      table(
        ['N', 'aggregate', 'per client min..max', 'p50 / p99', 'vs floor', 'vs N=1', 'RSS/device loaded', 'RSS/device idle', 'target'],
        devs.byN.map((d) => [
          String(d.n),
          `${si(d.aggregateOpsPerS)} ops/s`,
          `${si(d.minClientOpsPerS)} .. ${si(d.maxClientOpsPerS)}`,
          `${us(d.p50Us)} / ${us(d.p99Us)}`,
          d.vsFloor.toFixed(2),
          d.vsOne.toFixed(2),
          mib(d.loadedKbPerDevice),
          mib(d.idleKbPerDevice),
          d.n === DEVICE_COUNTS[DEVICE_COUNTS.length - 1] ? verdict(devs!.target) : '',
        ]),
      ),
    );
    out.push(`floor: pingpong 32/36 ${si(median(devs.floor.map((f) => f.ops)))} ops/s; RSS/device = (VmRSS with N devices - VmRSS of the host with 0 devices, ${mib(devs.byN[0].baselineRssKb)}) / N, loaded = mid-window, idle = before any client`);
    const late = Math.max(...devs.byN.map((d) => d.maxLateUs));
    if (late > devs.windowMs * 50) out.push(`warning: a client's warmup overran the window start by ${(late / 1000).toFixed(0)} ms`);
    out.push('');
  }
  const read4 = rows.find((r) => r.key === 'read_4');
  const noRegression = read4 ? { kind: 'ratio' as const, min: 0.65, text: '>= 0.65 of floor (no regression)', value: read4.ratio, pass: read4.ratio >= 0.65 } : undefined;
  if (noRegression) out.push(`same-CPU REGION_READ 4 B without --poll: ${noRegression.value.toFixed(2)} of its floor, ${verdict(noRegression)}`, '');
  const crossTargets: { name: string; kind: 'ratio'; min: number; text: string; value: number; pass: boolean }[] = [];
  if (cross) {
    const t = (name: string, min: number, text: string, value: number): string => {
      crossTargets.push({ name, kind: 'ratio', min, text, value, pass: value >= min });
      return verdict(crossTargets[crossTargets.length - 1]);
    };
    out.push(`cross-CPU: server on CPU ${SERVER_CPU}, client on CPU ${CLIENT_CPU}; floors: pingpong with a blocking / a busy-polling server (client blocks); rate, p50 / p99 us`);
    out.push(
      table(
        ['measurement', 'C blocking', 'C busy-poll', 'muser', 'muser --poll', '--poll/muser', '--poll/C blocking', '--poll/C busy', 'load'],
        cross.rows.map((r) => [
          r.label,
          `${si(r.floorBlocking.ops)}  ${lat(r.floorBlocking)}`,
          `${si(r.floorBusy.ops)}  ${lat(r.floorBusy)}`,
          `${si(r.muser.ops)}  ${lat(r.muser)}`,
          `${si(r.muserPoll.ops)}  ${lat(r.muserPoll)}`,
          r.pollVsPlain.toFixed(2),
          r.pollVsBlockingFloor.toFixed(2),
          r.pollVsBusyFloor.toFixed(2),
          r.load.toFixed(1),
        ]),
      ),
    );
    const read = cross.rows.find((r) => r.key === 'cross_read_4')!;
    out.push(`cross-CPU 4 B read with --poll vs muser without: ${read.pollVsPlain.toFixed(2)}  ${t('cross_read_poll_vs_plain', 2.0, '>= 2.0', read.pollVsPlain)}`);
    out.push(`cross-CPU 4 B read with --poll vs blocking C floor: ${read.pollVsBlockingFloor.toFixed(2)}  ${t('cross_read_poll_vs_blocking_floor', 1.5, '>= 1.5', read.pollVsBlockingFloor)}`);
    const idle = cross.idlePollCpu;
    crossTargets.push({ name: 'idle_poll_cpu', kind: 'ratio', min: 0, text: '< 5% of a CPU', value: idle, pass: idle < 0.05 });
    out.push(`idle --poll server, after its idle window: ${(idle * 100).toFixed(2)}% of a CPU (without --poll: ${(cross.idleCpu * 100).toFixed(2)}%)  ${verdict(crossTargets[crossTargets.length - 1])}`);
    out.push('');
  }
  const blkTargets: { name: string; kind: 'ratio'; min: number; text: string; value: number; pass: boolean }[] = [];
  if (blk) {
    out.push('virtio-blk data path: bench/bin/blkdrv (driver, CPU 0) against muser run virtio-blk --size 64M --queues 2 (CPU 1), and against a forked C responder (CPU 1) doing the same ring work;');
    out.push('4 KiB random I/O on a RAM disk; IOPS, latency p50 / p99 us (submit to reap); ratios are medians of per-round ratios');
    out.push(
      table(
        ['workload', 'C responder', 'muser', 'muser --poll', 'IOPS vs C', '--poll vs C', 'p50 vs C', '--poll p50 vs C', 'load'],
        blk.map((r) => [
          r.config.label,
          `${si(r.floor.iops)}  ${lat({ ops: 0, p50: r.floor.p50, p99: r.floor.p99 })}`,
          `${si(r.muser.iops)}  ${lat({ ops: 0, p50: r.muser.p50, p99: r.muser.p99 })}`,
          `${si(r.muserPoll.iops)}  ${lat({ ops: 0, p50: r.muserPoll.p50, p99: r.muserPoll.p99 })}`,
          r.iopsVsFloor.toFixed(2),
          r.pollIopsVsFloor.toFixed(2),
          r.p50VsFloor.toFixed(2),
          r.pollP50VsFloor.toFixed(2),
          r.load.toFixed(1),
        ]),
      ),
    );
    const by = (k: string): BlkRow => blk!.find((r) => r.config.key === k)!;
    const push = (name: string, text: string, value: number, pass: boolean): string => {
      blkTargets.push({ name, kind: 'ratio', min: 0, text, value, pass });
      return `${value.toFixed(2)}  ${verdict({ text, pass })}`;
    };
    const qd1 = by('r_q1_qd1');
    const best1 = Math.min(qd1.p50VsFloor, qd1.pollP50VsFloor);
    out.push(`QD1 4 KiB read p50 latency vs C responder (best of muser, --poll): ${push('blk_qd1_latency', '<= 1.5', best1, best1 <= 1.5)}`);
    const qd32 = by('r_q1_qd32');
    const best32 = Math.max(qd32.iopsVsFloor, qd32.pollIopsVsFloor);
    out.push(`QD32 1-queue IOPS vs C responder (best of muser, --poll): ${push('blk_qd32_iops', '>= 0.5', best32, best32 >= 0.5)}`);
    const ei = by('r_q1_qd32_ei');
    const bestEi = Math.max(ei.iopsVsFloor, ei.pollIopsVsFloor);
    out.push(`  the same with EVENT_IDX negotiated (as Linux guests do): ${push('blk_qd32_iops_event_idx', '>= 0.5', bestEi, bestEi >= 0.5)}`);
    const two = by('r_q2_qd32');
    const scaling = Math.max(two.muser.iops / qd32.muser.iops, two.muserPoll.iops / qd32.muserPoll.iops);
    out.push(`2 queues vs 1 queue at QD32, one JS thread (C responder: ${(two.floor.iops / qd32.floor.iops).toFixed(2)}): ${scaling.toFixed(2)}`);
    if (blkWorkers) {
      out.push('');
      out.push('queues on worker threads: muser run virtio-blk --size 64M --queues 2 --workers 2; 4 KiB random reads at QD32 per queue; driver threads on CPU 0');
      out.push(
        table(
          ['device', '1 queue (1 thread busy)', '2 queues (2 threads)', '2 queues / 1 queue', 'load'],
          blkWorkers.map((w) => [w.label, `${si(w.q1.iops)}  ${lat({ ops: 0, p50: w.q1.p50, p99: w.q1.p99 })}`, `${si(w.q2.iops)}  ${lat({ ops: 0, p50: w.q2.p50, p99: w.q2.p99 })}`, w.scaling.toFixed(2), w.load.toFixed(1)]),
        ),
      );
      const best = Math.max(...blkWorkers.map((w) => w.scaling));
      out.push(`2 queues on 2 worker threads vs 1 queue at QD32 (best setup): ${push('blk_workers_2q_vs_1q', '>= 1.5', best, best >= 1.5)}`);
    }
    if (blkDoorbells) out.push('', ...doorbellLines('virtio-blk kicks: posted REGION_WRITE (as QEMU sends them) vs stores into the mapped notify page (--mmap-doorbells); both servers --poll on CPU 1, driver CPU 0', blkDoorbells));
    out.push('');
  }
  if (nvme) {
    out.push('NVMe data path: bench/bin/nvmedrv (driver, CPU 0) against muser run nvme --size 64M --queues 2 (CPU 1), and against a forked minimal C NVMe controller (CPU 1)');
    out.push('reading the same posted doorbell messages and doing the same queue work; 4 KiB random reads on a RAM disk; IOPS, latency p50 / p99 us (submit to reap),');
    out.push('doorbell messages per command; ratios are medians of per-round ratios');
    out.push(
      table(
        ['workload', 'C controller', 'muser', 'db/cmd C', 'db/cmd muser', 'IOPS vs C', 'p50 vs C', 'load'],
        nvme.map((r) => [
          r.config.label,
          `${si(r.floor.iops)}  ${lat({ ops: 0, p50: r.floor.p50, p99: r.floor.p99 })}`,
          `${si(r.muser.iops)}  ${lat({ ops: 0, p50: r.muser.p50, p99: r.muser.p99 })}`,
          r.floor.doorbells.toFixed(3),
          r.muser.doorbells.toFixed(3),
          r.iopsVsFloor.toFixed(2),
          r.p50VsFloor.toFixed(2),
          r.load.toFixed(1),
        ]),
      ),
    );
    const byKey = (k: string): NvmeRow => nvme!.find((r) => r.config.key === k)!;
    const shadowGains = nvme.filter((r) => !r.config.shadow).map((r) => {
      const s = byKey(`${r.config.key}_shadow`);
      return `${r.config.label}: ${(s.muser.iops / r.muser.iops).toFixed(2)} (C: ${(s.floor.iops / r.floor.iops).toFixed(2)})`;
    });
    out.push(`muser IOPS with shadow doorbells / without: ${shadowGains.join('; ')}`, '');
    if (nvmeDoorbells) out.push(...doorbellLines('NVMe doorbells: posted REGION_WRITE (as QEMU sends them) vs stores into the mapped doorbell page (--mmap-doorbells); both servers --poll on CPU 1, driver CPU 0', nvmeDoorbells), '');
  }
  if (fileBacked) {
    const file = fileBacked;
    const f = (x: { iops: number; p50: number; p99: number }): string => `${si(x.iops)} IOPS  ${us(x.p50)} / ${us(x.p99)}`;
    out.push(`file-backed virtio-blk: 64 MiB image in the page cache, 4 KiB random reads, QD32, 1 queue; driver CPU 0, device and fio CPU 1 (load ${median(file.rounds.map((r) => r.load)).toFixed(1)})`);
    out.push(`  fio (io_uring, buffered)  ${f(file.fio)}`);
    out.push(`  muser                     ${f(file.muser)}`);
    out.push(`  muser --poll              ${f(file.muserPoll)}`);
    const pass = file.bestVsFio >= 0.5;
    blkTargets.push({ name: 'file_qd32_vs_fio', kind: 'ratio', min: 0.5, text: '>= 0.5 of fio', value: file.bestVsFio, pass });
    out.push(`file-backed QD32 IOPS vs fio (best of muser, --poll): ${file.bestVsFio.toFixed(2)}  ${verdict({ text: '>= 0.5 of fio', pass })}`, '');
  } else if (fileSkipped) {
    out.push('file-backed part skipped: fio is not installed (apt-get install fio)', '');
  }
  if (program) out.push(...formatProgram(program, si));
  out.push(`total ${elapsedS.toFixed(0)} s`);

  const targets = [
    ...rows.filter((r) => r.target).map((r) => ({ name: r.key, ...r.target! })),
    ...(views ? [{ name: 'views_vs_memcpy', ...views.target }] : []),
    ...(devs ? [{ name: `devices_${DEVICE_COUNTS[DEVICE_COUNTS.length - 1]}_vs_1`, ...devs.target }] : []),
    ...(noRegression ? [{ name: 'read_4_no_regression', ...noRegression }] : []),
    ...crossTargets,
    ...blkTargets,
  ];
  const json = {
    date,
    machine: m,
    config: { quick: QUICK, rounds: ROUNDS, scale: SCALE, pinnedCpu: 0, viewBytes: VIEW_BYTES, deviceCounts: DEVICE_COUNTS, deviceWindowMs: DEVICE_WINDOW_MS },
    elapsedS,
    single: rows,
    views,
    devices: devs,
    cross,
    blk,
    blkWorkers,
    nvme,
    blkDoorbells,
    nvmeDoorbells,
    file: fileBacked,
    program,
    loadAverage: { start: loadAtStart, end: loadAverage() },
    targets,
  };
  const resultsDir = join(ROOT, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, QUICK ? 'quick.json' : 'latest.json');
  writeFileSync(file, JSON.stringify(json, null, 2) + '\n');
  out.push(`results: ${file}`);
  process.stdout.write(out.join('\n') + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof BenchError ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
