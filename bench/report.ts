/**
 * What `npm run bench` prints: the tables of every part that ran, each
 * figure beside its floor and target, and the list of targets judged (which
 * results/*.json also holds).
 */
import { CLIENT_CPU, SERVER_CPU, type summarizeCross } from './cross.js';
import type { BlkRow, BlkWorkerRow } from './blk.js';
import type { DevicesSummary } from './devices.js';
import type { Judged } from './figures.js';
import type { FileResult } from './file.js';
import { formatIsolate, type IsolateResult } from './isolate.js';
import { lat, mib, si, table, us, verdict } from './format.js';
import type { NvmeRow } from './nvme.js';
import { doorbellTable, type DoorbellRow } from './doorbells.js';
import { loadAverage, median, type Machine } from './proc.js';
import { formatProgram, type ProgramRow } from './program.js';
import type { Row } from './single.js';
import type { ViewsSummary } from './views.js';

/** What the parts that ran measured (a part that did not run is undefined). */
export interface BenchResults {
  rows: Row[];
  views?: ViewsSummary;
  devs?: DevicesSummary;
  cross?: ReturnType<typeof summarizeCross>;
  blk?: BlkRow[];
  blkWorkers?: BlkWorkerRow[];
  nvme?: NvmeRow[];
  /** Kicks by message vs stored into the mapped notify page (--mmap-doorbells). */
  blkDoorbells?: DoorbellRow[];
  /** NVMe doorbells by message vs stored into the mapped doorbell page. */
  nvmeDoorbells?: DoorbellRow[];
  fileBacked?: FileResult;
  /** The file part was asked for, but fio is missing. */
  fileSkipped: boolean;
  program?: ProgramRow[];
  isolate?: IsolateResult;
}

/** How the run was made. */
export interface RunContext {
  quick: boolean;
  rounds: number;
  date: string;
  machine: Machine;
  loadAtStart: number;
  elapsedS: number;
  viewBytes: number;
  deviceCounts: readonly number[];
}

/** A judged target under its name in results/*.json. */
export type NamedTarget = Judged & { name: string };

/** The report's lines (without the results file's) and every target judged, in order. */
export function report(results: BenchResults, ctx: RunContext): { lines: string[]; targets: NamedTarget[] } {
  const { rows, views, devs, cross, blk, blkWorkers, nvme, blkDoorbells, nvmeDoorbells, fileBacked, fileSkipped, program, isolate } = results;
  const out: string[] = [];
  out.push(`muser bench${ctx.quick ? ' --quick (a smoke run: too short for its figures to mean anything)' : ''}  ${ctx.date}  commit ${ctx.machine.commit}${ctx.machine.dirty ? ' (+ uncommitted changes)' : ''}`);
  out.push(`machine: ${ctx.machine.cpu}, ${ctx.machine.nproc} CPUs, ${(ctx.machine.memTotalMiB / 1024).toFixed(1)} GiB, ${ctx.machine.kernel}, node ${ctx.machine.node}`);
  out.push(`load average (1 min): ${ctx.loadAtStart.toFixed(2)} at start, ${loadAverage().toFixed(2)} at end`);
  out.push(`single-CPU parts: server and clients pinned to CPU 0; each figure is the median of ${ctx.rounds} interleaved runs (floor, muser, ...);`);
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
      out.push(`  ${'guest memory reads'.padEnd(w)}  TypedArray.set out of another ${ctx.viewBytes >> 20} MiB memfd mapped MAP_SHARED in this process into the same plain buffer (fastest of source offsets 0..64 B)`);
      out.push(`views: ${ctx.viewBytes >> 20} MiB memfd DMA-mapped by an in-process client, device copies it out through ${views.viewCount} view(s); first pass (server page faults) ${views.firstPassGBps.toFixed(2)} GB/s`);
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
          d.n === ctx.deviceCounts[ctx.deviceCounts.length - 1] ? verdict(devs!.target) : '',
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
          `${si(r.floor.iops)}  ${lat(r.floor)}`,
          `${si(r.muser.iops)}  ${lat(r.muser)}`,
          `${si(r.muserPoll.iops)}  ${lat(r.muserPoll)}`,
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
          blkWorkers.map((w) => [w.label, `${si(w.q1.iops)}  ${lat(w.q1)}`, `${si(w.q2.iops)}  ${lat(w.q2)}`, w.scaling.toFixed(2), w.load.toFixed(1)]),
        ),
      );
      const best = Math.max(...blkWorkers.map((w) => w.scaling));
      out.push(`2 queues on 2 worker threads vs 1 queue at QD32 (best setup): ${push('blk_workers_2q_vs_1q', '>= 1.5', best, best >= 1.5)}`);
    }
    const blkIso = blk.filter((r) => r.isolated);
    if (blkIso.length > 0) out.push(`--isolate (device in a child process, inflight logs on) / in process, IOPS: ${blkIso.map((r) => `${r.config.label} ${r.isolatedVsMuser!.toFixed(2)} (${si(r.isolated!.iops)}, p50 ${us(r.isolated!.p50)} us)`).join('; ')}  (goal >= 0.95)`);
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
          `${si(r.floor.iops)}  ${lat(r.floor)}`,
          `${si(r.muser.iops)}  ${lat(r.muser)}`,
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
    out.push(`muser IOPS with shadow doorbells / without: ${shadowGains.join('; ')}`);
    const iso = nvme.filter((r) => r.isolated);
    if (iso.length > 0) out.push(`--isolate (controller in a child process, in-flight log on) / in process, IOPS: ${iso.map((r) => `${r.config.label} ${r.isolatedVsMuser!.toFixed(2)} (${si(r.isolated!.iops)}, p50 ${us(r.isolated!.p50)} us)`).join('; ')}  (goal >= 0.95)`);
    const workers = nvme.filter((r) => r.workers);
    if (workers.length > 0) out.push(`--workers 2 (I/O queues on worker threads, same CPU) / main thread, IOPS: ${workers.map((r) => `${r.config.label} ${r.workersVsMuser!.toFixed(2)} (${si(r.workers!.iops)}, p50 ${us(r.workers!.p50)} us)`).join('; ')}`);
    out.push('');
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
  if (isolate) out.push(...formatIsolate(isolate), '');
  out.push(`total ${ctx.elapsedS.toFixed(0)} s`);

  const targets = [
    ...rows.filter((r) => r.target).map((r) => ({ name: r.key, ...r.target! })),
    ...(views ? [{ name: 'views_vs_memcpy', ...views.target }] : []),
    ...(devs ? [{ name: `devices_${ctx.deviceCounts[ctx.deviceCounts.length - 1]}_vs_1`, ...devs.target }] : []),
    ...(noRegression ? [{ name: 'read_4_no_regression', ...noRegression }] : []),
    ...crossTargets,
    ...blkTargets,
  ];
  return { lines: out, targets };
}

/** A titled table of doorbells by message vs in a mapped page (see doorbells.ts). */
function doorbellLines(title: string, rows: DoorbellRow[]): string[] {
  const t = doorbellTable(rows, si);
  return [title, "server cpu: the server process's CPU over each run (100% = one CPU); ratios are medians of per-round ratios, the pair run back to back", table(t.head, t.rows)];
}
