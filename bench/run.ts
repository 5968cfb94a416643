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
 * nvme, file, program, isolate; file needs fio and is skipped with a note without it).
 *
 * `--quick` (CI's run): every part once with the fewest iterations (rounds 1,
 * scale 0.01 unless the environment says otherwise), in well under a minute on
 * an idle machine; its figures are too short to mean anything, so it writes
 * bench/results/quick.json and leaves latest.json to full runs. Like a full
 * run it fails only when something broke.
 *
 * This file runs the parts and writes the results; each part measures in its
 * own file (single.ts, views.ts, devices.ts, cross.ts, blk.ts, nvme.ts,
 * file.ts, program.ts), and report.ts prints the tables.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureBlk, measureBlkDoorbells, measureBlkWorkers, type BlkRow, type BlkWorkerRow } from './blk.js';
import type { DoorbellRow } from './doorbells.js';
import { measureCross, summarizeCross } from './cross.js';
import { measureDevices, type DevicesSummary } from './devices.js';
import { haveFio, measureFile, type FileResult } from './file.js';
import { measureIsolate, type IsolateResult } from './isolate.js';
import { measureNvme, measureNvmeDoorbells, type NvmeRow } from './nvme.js';
import { BenchError, buildC, loadAverage, machine, ROOT } from './proc.js';
import { measureProgram, type ProgramRow } from './program.js';
import { report } from './report.js';
import { single, type Row } from './single.js';
import { measureViews, summarizeViews, type ViewsSummary } from './views.js';

const QUICK = parseArgs(process.argv.slice(2));
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? (QUICK ? 1 : 3)));
const SCALE = Math.max(0.01, Number(process.env.BENCH_SCALE ?? (QUICK ? 0.01 : 1)));
const ONLY = new Set((process.env.BENCH_ONLY ?? 'single,views,devices,cross,blk,nvme,file,program,isolate').split(','));
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

async function main(): Promise<void> {
  const t0 = Date.now();
  const log = (s: string): void => void process.stderr.write(`bench: ${s} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
  buildC();
  const m = machine();
  const date = new Date().toISOString();
  const dir = mkdtempSync(join(tmpdir(), 'muser-bench-'));
  let rows: Row[] = [];
  let views: ViewsSummary | undefined;
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
  let isolate: IsolateResult | undefined;
  const loadAtStart = loadAverage();
  try {
    if (ONLY.has('single')) rows = await single(dir, ROUNDS, it, log);
    if (ONLY.has('views')) {
      log(`guest memory reads through views (${VIEW_BYTES >> 20} MiB)`);
      views = summarizeViews(await measureViews(VIEW_BYTES, ROUNDS, 5));
    }
    if (ONLY.has('devices')) devs = await measureDevices(ROUNDS, DEVICE_COUNTS, DEVICE_WINDOW_MS, it, log);
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
    if (ONLY.has('isolate')) {
      log('isolation: round trips, memory, SIGKILL to serving');
      isolate = await measureIsolate(dir, ROUNDS, it);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const elapsedS = (Date.now() - t0) / 1000;

  const { lines: out, targets } = report(
    { rows, views, devs, cross, blk, blkWorkers, nvme, blkDoorbells, nvmeDoorbells, fileBacked, fileSkipped, program, isolate },
    { quick: QUICK, rounds: ROUNDS, date, machine: m, loadAtStart, elapsedS, viewBytes: VIEW_BYTES, deviceCounts: DEVICE_COUNTS },
  );
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
    isolate,
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
