/**
 * Devices in Python (`program` part): what a register access costs when its
 * callback runs in a device program, beside the same device in TypeScript.
 * `loadgen read` (C, CPU 0) against `muser run <device> SOCK` pinned to CPU 0
 * (the Python program inherits the pinning, so muser, Python and loadgen
 * share one CPU, as in the `single` part):
 *
 * - pvpanic in TypeScript (bench/pvpanic-device.ts): a read callback in JS;
 * - pvpanic in Python (python/examples/pvpanic.py): the same callback in Python,
 *   one READ round trip to the program per access;
 * - edu in Python, its `id` register: a register without callbacks, which
 *   muser serves with no round trip.
 *
 * Rounds interleave the three servers; each figure is the median.
 */
import { join } from 'node:path';
import { CliServer, median, num, ROOT } from './proc.js';

interface Fig {
  ops: number;
  p50: number;
  p99: number;
}

export interface ProgramRow {
  key: string;
  label: string;
  device: string;
  size: number;
  fig: Fig;
  runs: Fig[];
}

const SETUPS = [
  { key: 'ts_callback', label: 'TypeScript pvpanic, read callback (1 B)', device: join(ROOT, 'dist', 'bench', 'pvpanic-device.js'), size: 1, iters: 40_000 },
  { key: 'py_callback', label: 'Python pvpanic, read callback (1 B)', device: join(ROOT, 'python', 'examples', 'pvpanic.py'), size: 1, iters: 10_000 },
  { key: 'py_stored', label: 'Python edu, register muser stores (4 B)', device: join(ROOT, 'python', 'examples', 'edu.py'), size: 4, iters: 40_000 },
];

export async function measureProgram(dir: string, rounds: number, it: (n: number) => string, log: (s: string) => void): Promise<ProgramRow[]> {
  const servers = await Promise.all(SETUPS.map((s) => CliServer.start(join(dir, `${s.key}.sock`), 0, [], s.device)));
  try {
    // Untimed warm-up (JIT, Python's first imports).
    for (const [i, s] of SETUPS.entries()) await servers[i].loadgen('read', ['--size', String(s.size), '--iters', it(s.iters / 4)]);
    const runs: Fig[][] = SETUPS.map(() => []);
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: devices in Python`);
      for (const [i, s] of SETUPS.entries()) {
        const j = await servers[i].loadgen('read', ['--size', String(s.size), '--iters', it(s.iters)]);
        runs[i].push({ ops: num(j, 'ops_per_s'), p50: num(j, 'p50_us'), p99: num(j, 'p99_us') });
      }
    }
    return SETUPS.map((s, i) => ({
      key: s.key,
      label: s.label,
      device: s.device.replace(ROOT + '/', ''),
      size: s.size,
      runs: runs[i],
      fig: { ops: median(runs[i].map((f) => f.ops)), p50: median(runs[i].map((f) => f.p50)), p99: median(runs[i].map((f) => f.p99)) },
    }));
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}

/** The part's lines in the bench report. */
export function formatProgram(rows: ProgramRow[], si: (x: number) => string): string[] {
  const ts = rows.find((r) => r.key === 'ts_callback')!;
  const py = rows.find((r) => r.key === 'py_callback')!;
  const mean = (f: Fig): number => 1e6 / f.ops;
  const out = ['devices in Python: loadgen REGION_READ (CPU 0) against muser run <device> (CPU 0; the Python program inherits it); mean = 1 / rate'];
  const w = Math.max(...rows.map((r) => r.label.length));
  out.push(`  ${'device'.padEnd(w)}  ${'reads/s'.padStart(9)}  ${'mean us'.padStart(8)}  p50 / p99 us`);
  for (const r of rows) out.push(`  ${r.label.padEnd(w)}  ${si(r.fig.ops).padStart(9)}  ${mean(r.fig).toFixed(1).padStart(8)}  ${r.fig.p50.toFixed(1)} / ${r.fig.p99.toFixed(1)}`);
  out.push(`  a Python read callback costs ${(mean(py.fig) - mean(ts.fig)).toFixed(1)} us more per access than the same callback in TypeScript (${(py.fig.ops / ts.fig.ops).toFixed(2)} of its rate)`);
  out.push('');
  return out;
}
