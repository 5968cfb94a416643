/**
 * Devices in Python (`program` part): what a register access costs when its
 * callback runs in a device program, beside the same device in TypeScript.
 * `loadgen read` (C, CPU 0) against `muser run <device> SOCK` pinned to CPU 0
 * (the Python program inherits the pinning, so muser, Python and loadgen
 * share one CPU, as in the `single` part), and again with the device
 * (muser and Python) pinned to CPU 1, as a VMM's vCPU and a device are:
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
  /** The CPU muser and the program are pinned to (loadgen: CPU 0). */
  cpu: number;
  fig: Fig;
  runs: Fig[];
}

const CPUS = [0, 1];

const SETUPS = [
  { key: 'ts_callback', label: 'TypeScript pvpanic, read callback (1 B)', device: join(ROOT, 'dist', 'bench', 'pvpanic-device.js'), size: 1, iters: 40_000 },
  { key: 'py_callback', label: 'Python pvpanic, read callback (1 B)', device: join(ROOT, 'python', 'examples', 'pvpanic.py'), size: 1, iters: 10_000 },
  { key: 'py_stored', label: 'Python edu, register muser stores (4 B)', device: join(ROOT, 'python', 'examples', 'edu.py'), size: 4, iters: 40_000 },
];

export async function measureProgram(dir: string, rounds: number, it: (n: number) => string, log: (s: string) => void): Promise<ProgramRow[]> {
  const setups = CPUS.flatMap((cpu) => SETUPS.map((s) => ({ ...s, cpu })));
  const servers = await Promise.all(setups.map((s) => CliServer.start(join(dir, `${s.key}-${s.cpu}.sock`), s.cpu, [], s.device)));
  try {
    // Untimed warm-up (JIT, Python's first imports).
    for (const [i, s] of setups.entries()) await servers[i].loadgen('read', ['--size', String(s.size), '--iters', it(s.iters / 4)]);
    const runs: Fig[][] = setups.map(() => []);
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: devices in Python`);
      for (const [i, s] of setups.entries()) {
        const j = await servers[i].loadgen('read', ['--size', String(s.size), '--iters', it(s.iters)]);
        runs[i].push({ ops: num(j, 'ops_per_s'), p50: num(j, 'p50_us'), p99: num(j, 'p99_us') });
      }
    }
    return setups.map((s, i) => ({
      key: s.key,
      label: s.label,
      device: s.device.replace(ROOT + '/', ''),
      size: s.size,
      cpu: s.cpu,
      runs: runs[i],
      fig: { ops: median(runs[i].map((f) => f.ops)), p50: median(runs[i].map((f) => f.p50)), p99: median(runs[i].map((f) => f.p99)) },
    }));
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}

/** The part's lines in the bench report. */
export function formatProgram(rows: ProgramRow[], si: (x: number) => string): string[] {
  const mean = (f: Fig): number => 1e6 / f.ops;
  const out = ['devices in Python: loadgen REGION_READ (CPU 0) against muser run <device> (the Python program shares its CPU); reads/s, mean = 1 / rate, p50 / p99 us'];
  const w = Math.max(...rows.map((r) => r.label.length));
  const cell = (f: Fig): string => `${si(f.ops).padStart(7)}  ${mean(f).toFixed(1).padStart(6)}  ${f.p50.toFixed(1)} / ${f.p99.toFixed(1)}`.padEnd(32);
  out.push(`  ${'device'.padEnd(w)}  ${'device on CPU 0 (same CPU)'.padEnd(32)}  device on CPU 1`);
  for (const label of [...new Set(rows.map((r) => r.label))]) {
    const [same, cross] = CPUS.map((cpu) => rows.find((r) => r.label === label && r.cpu === cpu)!);
    out.push(`  ${label.padEnd(w)}  ${cell(same.fig)}  ${cell(cross.fig)}`.trimEnd());
  }
  for (const cpu of CPUS) {
    const ts = rows.find((r) => r.key === 'ts_callback' && r.cpu === cpu)!;
    const py = rows.find((r) => r.key === 'py_callback' && r.cpu === cpu)!;
    out.push(`  device on CPU ${cpu}: a read answered in Python instead of TypeScript: mean ${mean(ts.fig).toFixed(1)} -> ${mean(py.fig).toFixed(1)} us, p50 ${ts.fig.p50.toFixed(1)} -> ${py.fig.p50.toFixed(1)} us (${(py.fig.ops / ts.fig.ops).toFixed(2)} of the rate)`);
  }
  out.push('');
  return out;
}
