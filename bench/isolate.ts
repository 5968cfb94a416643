/**
 * What `--isolate` costs and gives (issue 20): a register round trip and a
 * 4 KiB RAM-BAR write with and without it (the bench sample, loadgen as
 * client; a write is checkpointed before its reply), the memory of a
 * device served in a child (the parent, the serving child and the warm
 * spare, RSS and PSS) against in process, and the time from a SIGKILL of
 * the serving child to the next answered request.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '../src/client/index.js';
import { IsolatedServer } from '../src/isolate/index.js';
import { CliServer, median, num, rssKb, type Json } from './proc.js';

const CHILD_ENTRY = fileURLToPath(new URL('../src/cli/run/isolate-child.js', import.meta.url));
const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

export interface IsolateOp {
  key: string;
  label: string;
  plain: { ops: number; p50: number };
  isolated: { ops: number; p50: number };
  /** isolated / plain ops per second (median of rounds). */
  ratio: number;
}

export interface IsolateResult {
  ops: IsolateOp[];
  memory: { inProcessRssKb: number; inProcessPssKb: number; isolatedRssKb: number; isolatedPssKb: number; processes: number };
  recovery: { killsMs: number[]; medianMs: number; maxMs: number };
}

/** PSS of a process in KiB (shared pages split among their users). */
function pssKb(pid: number): number {
  const m = /^Pss:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** `pid` and every process whose parent is `pid`. */
function family(pid: number): number[] {
  const kids = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] === String(pid);
      } catch {
        return false;
      }
    })
    .map(Number);
  return [pid, ...kids];
}

const CASES = [
  { key: 'read_4', label: 'REGION_READ 4 B', op: 'read', size: 4, iters: 20_000 },
  { key: 'write_4', label: 'REGION_WRITE 4 B (checkpointed)', op: 'write', size: 4, iters: 10_000 },
];

/** Runs the isolation figures; `it(n)` scales iteration counts (quick runs). */
export async function measureIsolate(dir: string, rounds: number, it: (n: number) => string): Promise<IsolateResult> {
  const plain = await CliServer.start(join(dir, 'iso-plain.sock'), 0, [], 'bench');
  const isolated = await CliServer.start(join(dir, 'iso.sock'), 0, [], 'bench', ['--isolate']);
  try {
    const ops: IsolateOp[] = [];
    for (const c of CASES) {
      const runs: { plain: Json; isolated: Json }[] = [];
      for (let r = 0; r < rounds; r++) {
        const args = ['--size', String(c.size), '--iters', it(c.iters)];
        runs.push({ plain: await plain.loadgen(c.op, args), isolated: await isolated.loadgen(c.op, args) });
      }
      const fig = (k: 'plain' | 'isolated'): { ops: number; p50: number } => ({ ops: median(runs.map((x) => num(x[k], 'ops_per_s'))), p50: median(runs.map((x) => num(x[k], 'p50_us'))) });
      ops.push({ key: c.key, label: c.label, plain: fig('plain'), isolated: fig('isolated'), ratio: median(runs.map((x) => num(x.isolated, 'ops_per_s') / num(x.plain, 'ops_per_s'))) });
    }
    const isoFamily = family(isolated.pid);
    const memory = {
      inProcessRssKb: rssKb(plain.pid),
      inProcessPssKb: pssKb(plain.pid),
      isolatedRssKb: isoFamily.reduce((n, p) => n + rssKb(p), 0),
      isolatedPssKb: isoFamily.reduce((n, p) => n + pssKb(p), 0),
      processes: isoFamily.length,
    };
    return { ops, memory, recovery: await measureRecovery(dir, rounds * 4) };
  } finally {
    await plain.stop();
    await isolated.stop();
  }
}

/** SIGKILL of the serving child (a spare waiting) to the next answered REGION_READ, `kills` times. */
async function measureRecovery(dir: string, kills: number): Promise<IsolateResult['recovery']> {
  const server = await IsolatedServer.start({ device: 'counter', options: {} }, join(dir, 'iso-kill.sock'), { entry: CHILD_ENTRY, log: quiet });
  const client = await Client.connect(server.path);
  try {
    // A first write makes a checkpoint: each successor loads it (as a device in use would).
    await client.regionWrite(0, 4, Buffer.from([1, 0, 0, 0]));
    const killsMs: number[] = [];
    for (let i = 0; i < kills; i++) {
      await server.standby();
      const t0 = performance.now();
      process.kill(server.childPid!, 'SIGKILL');
      await client.regionRead(0, 0, 4);
      killsMs.push(performance.now() - t0);
    }
    return { killsMs, medianMs: median(killsMs), maxMs: Math.max(...killsMs) };
  } finally {
    client.close();
    server.close();
  }
}

/** The isolation section of the report. */
export function formatIsolate(r: IsolateResult): string[] {
  const lines = ['', 'Isolation (--isolate: the device in a child process, bench sample; loadgen on CPU 0 with the server)'];
  for (const o of r.ops) {
    lines.push(`  ${o.label.padEnd(34)} in process ${o.plain.ops.toFixed(0).padStart(7)} ops/s p50 ${o.plain.p50.toFixed(1)} us | isolated ${o.isolated.ops.toFixed(0).padStart(7)} ops/s p50 ${o.isolated.p50.toFixed(1)} us | ${o.ratio.toFixed(2)}x`);
  }
  const m = r.memory;
  lines.push(`  memory per device: in process RSS ${(m.inProcessRssKb / 1024).toFixed(0)} MiB (PSS ${(m.inProcessPssKb / 1024).toFixed(0)}); isolated ${m.processes} processes RSS ${(m.isolatedRssKb / 1024).toFixed(0)} MiB (PSS ${(m.isolatedPssKb / 1024).toFixed(0)})`);
  lines.push(`  SIGKILL to the next answer (warm spare): median ${r.recovery.medianMs.toFixed(1)} ms, max ${r.recovery.maxMs.toFixed(1)} ms over ${r.recovery.killsMs.length} kills (goal < 100 ms)`);
  return lines;
}
