/**
 * Cross-CPU socket figures: the server on CPU 1, the client on CPU 0, as a
 * VMM's vCPU and a device process on different cores. 4 B REGION_READ and
 * doorbell -> IRQ eventfd, muser with and without `--poll`, beside two C
 * floors of our own: pingpong with a blocking server and with a
 * busy-polling one (the client blocks in both, like loadgen). Also what an
 * idle `--poll` server costs once its idle window has passed, from
 * /proc/<pid>/stat.
 */
import { join } from 'node:path';
import { CliServer, cpuSeconds, loadAverage, median, medianFields, num, runJson, PINGPONG, type Json } from './proc.js';

export const CLIENT_CPU = 0;
export const SERVER_CPU = 1;

export interface CrossFig {
  ops: number;
  p50: number;
  p99: number;
  /** Under load the fast round trips tell the code apart (bench/README.md, issue 22). */
  p10: number;
}

export interface CrossRound {
  load: number;
  floorBlocking: CrossFig;
  floorBusy: CrossFig;
  muser: CrossFig;
  muserPoll: CrossFig;
}

export interface CrossCase {
  key: string;
  label: string;
  rounds: CrossRound[];
}

export interface CrossResult {
  cases: CrossCase[];
  /** CPU share of an idle --poll server, measured after its idle window, per round. */
  idlePollCpu: number[];
  /** The same for the server without --poll. */
  idleCpu: number[];
  idleWindowS: number;
}

const fig = (j: Json, rate = 'ops_per_s'): CrossFig => ({ ops: num(j, rate), p50: num(j, 'p50_us'), p99: num(j, 'p99_us'), p10: num(j, 'p10_us') });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function floor(args: string[], busy: boolean): Promise<Json> {
  return runJson(PINGPONG, [...args, '--cpu', String(CLIENT_CPU), '--server-cpu', String(SERVER_CPU), ...(busy ? ['--busy'] : [])]);
}

/** Share of one CPU the process used over `seconds` (0.5 = half a CPU). */
async function cpuShare(pid: number, seconds: number): Promise<number> {
  const t0 = cpuSeconds(pid);
  const w0 = performance.now();
  await sleep(seconds * 1000);
  return (cpuSeconds(pid) - t0) / ((performance.now() - w0) / 1000);
}

/** Runs `rounds` interleaved rounds; `it` scales iteration counts. */
export async function measureCross(dir: string, rounds: number, it: (n: number) => string, log: (s: string) => void): Promise<CrossResult> {
  const plain = await CliServer.start(join(dir, 'cross.sock'), SERVER_CPU);
  const poll = await CliServer.start(join(dir, 'cross-poll.sock'), SERVER_CPU, ['--poll']);
  const idleWindowS = 2;
  try {
    // Untimed warm-up of both servers' JIT.
    for (const s of [plain, poll]) await s.loadgen('read', ['--size', '4', '--iters', it(10_000)]);
    const defs: { key: string; label: string; floorArgs: string[]; op: string; args: string[] }[] = [
      { key: 'cross_read_4', label: 'REGION_READ 4 B', floorArgs: ['--size-req', '32', '--size-rep', '36', '--iters', it(20_000)], op: 'read', args: ['--size', '4', '--iters', it(20_000)] },
      { key: 'cross_irq_latency', label: 'doorbell -> IRQ eventfd', floorArgs: ['--irqs', '1', '--iters', it(10_000)], op: 'irq-latency', args: ['--iters', it(10_000)] },
    ];
    const cases: CrossCase[] = defs.map((d) => ({ key: d.key, label: d.label, rounds: [] }));
    const idlePollCpu: number[] = [];
    const idleCpu: number[] = [];
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: cross-CPU (server CPU ${SERVER_CPU}, client CPU ${CLIENT_CPU})`);
      for (const [i, d] of defs.entries()) {
        const load = loadAverage();
        const floorBlocking = fig(await floor(d.floorArgs, false));
        const muser = fig(await plain.loadgen(d.op, d.args));
        const floorBusy = fig(await floor(d.floorArgs, true));
        const muserPoll = fig(await poll.loadgen(d.op, d.args));
        cases[i].rounds.push({ load, floorBlocking, floorBusy, muser, muserPoll });
      }
      // Both servers have been idle since their last client; the poll
      // server's 1 ms window is long gone after this pause.
      await sleep(100);
      idlePollCpu.push(await cpuShare(poll.pid, idleWindowS));
      idleCpu.push(await cpuShare(plain.pid, idleWindowS));
    }
    return { cases, idlePollCpu, idleCpu, idleWindowS };
  } finally {
    await plain.stop();
    await poll.stop();
  }
}

/** Medians and target verdicts of a cross-CPU result. */
export function summarizeCross(x: CrossResult): {
  rows: { key: string; label: string; load: number; floorBlocking: CrossFig; floorBusy: CrossFig; muser: CrossFig; muserPoll: CrossFig; pollVsPlain: number; pollVsBlockingFloor: number; pollVsBusyFloor: number }[];
  idlePollCpu: number;
  idleCpu: number;
} {
  const med = (fs: CrossFig[]): CrossFig => medianFields(fs);
  return {
    rows: x.cases.map((c) => ({
      key: c.key,
      label: c.label,
      load: median(c.rounds.map((r) => r.load)),
      floorBlocking: med(c.rounds.map((r) => r.floorBlocking)),
      floorBusy: med(c.rounds.map((r) => r.floorBusy)),
      muser: med(c.rounds.map((r) => r.muser)),
      muserPoll: med(c.rounds.map((r) => r.muserPoll)),
      pollVsPlain: median(c.rounds.map((r) => r.muserPoll.ops / r.muser.ops)),
      pollVsBlockingFloor: median(c.rounds.map((r) => r.muserPoll.ops / r.floorBlocking.ops)),
      pollVsBusyFloor: median(c.rounds.map((r) => r.muserPoll.ops / r.floorBusy.ops)),
    })),
    idlePollCpu: median(x.idlePollCpu),
    idleCpu: median(x.idleCpu),
  };
}
