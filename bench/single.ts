/**
 * The single-device part of `npm run bench`: REGION_READ / REGION_WRITE,
 * DMA_MAP+UNMAP, interrupts and REGION_WRITE_MULTI against the bench sample
 * served by the CLI on CPU 0, each beside its pingpong floor, in rounds that
 * alternate floor and muser.
 */
import { join } from 'node:path';
import { fig, type Fig, type Iterations, type Judged, type Target } from './figures.js';
import { CliServer, median, num, pingpong } from './proc.js';

interface Case {
  key: string;
  label: string;
  unit: string;
  floorNote: string;
  floor(): Promise<Fig>;
  muser(s: CliServer): Promise<Fig>;
  target?: Target;
}

function rwCase(it: Iterations, key: string, label: string, op: 'read' | 'write', size: number, req: number, rep: number, iters: number, target?: Target): Case {
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

/** The single-device cases, with iteration counts scaled by `it`. */
function singleCases(it: Iterations): Case[] {
  return [
    rwCase(it, 'read_4', 'REGION_READ 4 B', 'read', 4, 32, 36, 40_000, { kind: 'ratio', min: 0.9, text: '>= 0.90 of floor' }),
    rwCase(it, 'read_4k', 'REGION_READ 4 KiB', 'read', 4096, 32, 4128, 30_000),
    rwCase(it, 'write_4', 'REGION_WRITE 4 B', 'write', 4, 36, 32, 40_000),
    rwCase(it, 'write_4k', 'REGION_WRITE 4 KiB', 'write', 4096, 4128, 32, 30_000),
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
}

export interface Row {
  key: string;
  label: string;
  unit: string;
  floorNote: string;
  muser: Fig;
  floor: Fig;
  ratio: number;
  runs: { muser: Fig; floor: Fig; ratio: number }[];
  target?: Judged;
}

const medFig = (fs: Fig[]): Fig => ({ ops: median(fs.map((f) => f.ops)), p50: median(fs.map((f) => f.p50)), p99: median(fs.map((f) => f.p99)) });

function judge(t: Target | undefined, ratio: number, ops: number): Row['target'] {
  if (!t) return undefined;
  const value = t.kind === 'ratio' ? ratio : ops;
  return { ...t, value, pass: value >= t.min };
}

/** The single-device table: each case against its floor, `rounds` interleaved rounds. */
export async function single(dir: string, rounds: number, it: Iterations, log: (s: string) => void): Promise<Row[]> {
  const cases = singleCases(it);
  const server = await CliServer.start(join(dir, 'bench.sock'));
  try {
    // Untimed warm-up: let the server's JIT settle before round 1.
    await server.loadgen('read', ['--size', '4', '--iters', it(20_000)]);
    const runs = new Map<string, { muser: Fig; floor: Fig; ratio: number }[]>(cases.map((c) => [c.key, []]));
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: single device`);
      for (const c of cases) {
        const floor = await c.floor();
        const muser = await c.muser(server);
        runs.get(c.key)!.push({ floor, muser, ratio: muser.ops / floor.ops });
      }
    }
    return cases.map((c) => {
      const rs = runs.get(c.key)!;
      const muser = medFig(rs.map((x) => x.muser));
      const ratio = median(rs.map((x) => x.ratio));
      return { key: c.key, label: c.label, unit: c.unit, floorNote: c.floorNote, muser, floor: medFig(rs.map((x) => x.floor)), ratio, runs: rs, target: judge(c.target, ratio, muser.ops) };
    });
  } finally {
    await server.stop();
  }
}
