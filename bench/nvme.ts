/**
 * NVMe data path: bench/bin/nvmedrv plays the guest's NVMe driver (guest
 * RAM in a sealed memfd, posted BAR0 doorbell writes, MSI-X eventfds)
 * against `muser run nvme --size 64M --queues 2` and against its floor, a
 * forked minimal C NVMe controller reading the same doorbell messages and
 * doing the same queue work. Driver on CPU 0, controller on CPU 1. 4 KiB
 * random reads at QD 1 and 32 on 1 and 2 queues, each with and without
 * shadow doorbells (Doorbell Buffer Config, as Linux uses when offered).
 * Some rows also against `--isolate`, and against `--workers 2` (the I/O
 * queues on worker threads, pinned to the controller's CPU like the rest).
 * And doorbells by message against doorbells stored into the mapped page
 * (`--mmap-doorbells`), both under `--poll`, with the server's CPU.
 */
import { join } from 'node:path';
import { CliServer, loadAverage, median, medianFields, num, runJson, NVMEDRV, type Json } from './proc.js';
import { doorbellFig, doorbellRow, type DoorbellFig, type DoorbellRound, type DoorbellRow } from './doorbells.js';

const DRIVER_CPU = 0;
const DEVICE_CPU = 1;
const DISK_MIB = 64;

export interface NvmeFig {
  iops: number;
  p50: number;
  p99: number;
  /** Doorbell messages per command. */
  doorbells: number;
}

export interface NvmeConfig {
  key: string;
  label: string;
  queues: number;
  qd: number;
  shadow: boolean;
}

export const NVME_CONFIGS: NvmeConfig[] = [1, 32].flatMap((qd) =>
  [1, 2].flatMap((queues) =>
    [false, true].map((shadow) => ({
      key: `r_q${queues}_qd${qd}${shadow ? '_shadow' : ''}`,
      label: `read QD${qd}, ${queues} queue${queues > 1 ? 's' : ''}${shadow ? ', shadow' : ''}`,
      queues,
      qd,
      shadow,
    })),
  ),
);

export interface NvmeRound {
  load: number;
  floor: NvmeFig;
  muser: NvmeFig;
  /** The same run against `muser run --isolate nvme` (rows in ISOLATED_KEYS only). */
  isolated?: NvmeFig;
  /** The same run against `muser run nvme --workers 2` (rows in NVME_WORKER_KEYS only). */
  workers?: NvmeFig;
}

/** Rows also measured with the I/O queues on two worker threads (`--workers 2`). */
export const NVME_WORKER_KEYS = new Set(['r_q2_qd32_shadow']);

/** Rows also measured with the controller in an isolated child process (`--isolate`). */
export const NVME_ISOLATED_KEYS = new Set(['r_q1_qd1', 'r_q1_qd32_shadow', 'r_q2_qd32_shadow']);

export interface NvmeRow {
  config: NvmeConfig;
  rounds: NvmeRound[];
  floor: NvmeFig;
  muser: NvmeFig;
  /** Medians of per-round ratios. */
  iopsVsFloor: number;
  p50VsFloor: number;
  load: number;
  /** `--isolate`'s figure and its IOPS / in-process IOPS (median of per-round ratios), for NVME_ISOLATED_KEYS. */
  isolated?: NvmeFig;
  isolatedVsMuser?: number;
  /** `--workers 2`'s figure and its IOPS / main-thread IOPS (median of per-round ratios), for NVME_WORKER_KEYS. */
  workers?: NvmeFig;
  workersVsMuser?: number;
}

const fig = (j: Json): NvmeFig => ({ iops: num(j, 'iops'), p50: num(j, 'p50_us'), p99: num(j, 'p99_us'), doorbells: num(j, 'doorbells_per_op') });

function args(c: NvmeConfig, seconds: number): string[] {
  return ['--queues', String(c.queues), '--qd', String(c.qd), '--seconds', String(seconds), '--disk-mib', String(DISK_MIB), '--cpu', String(DRIVER_CPU), ...(c.shadow ? ['--shadow'] : [])];
}

/** Runs `rounds` interleaved rounds (floor, then muser, per config). */
export async function measureNvme(dir: string, rounds: number, scale: number, log: (s: string) => void): Promise<NvmeRow[]> {
  const server = await CliServer.start(join(dir, 'nvme.sock'), DEVICE_CPU, ['--size', `${DISK_MIB}M`, '--queues', '2'], 'nvme');
  const isolatedServer = await CliServer.start(join(dir, 'nvme-iso.sock'), DEVICE_CPU, ['--size', `${DISK_MIB}M`, '--queues', '2'], 'nvme', ['--isolate']);
  const workerServer = await CliServer.start(join(dir, 'nvme-workers.sock'), DEVICE_CPU, ['--size', `${DISK_MIB}M`, '--queues', '2', '--workers', '2'], 'nvme');
  const seconds = Math.max(1, Math.round(scale));
  try {
    // Untimed warm-up: JIT, and the RAM disk's pages touched once.
    for (const s of [server, isolatedServer, workerServer]) await s.client(NVMEDRV, ['--socket', s.socket, '--qd', '32', '--seconds', '1', '--write', '--cpu', String(DRIVER_CPU)]);
    const rs = new Map<string, NvmeRound[]>(NVME_CONFIGS.map((c) => [c.key, []]));
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: NVMe data path (driver CPU ${DRIVER_CPU}, controller CPU ${DEVICE_CPU})`);
      for (const c of NVME_CONFIGS) {
        const load = loadAverage();
        const floor = fig(await runJson(NVMEDRV, ['--responder', '--server-cpu', String(DEVICE_CPU), ...args(c, seconds)]));
        const muser = fig(await server.client(NVMEDRV, ['--socket', server.socket, ...args(c, seconds)]));
        const isolated = NVME_ISOLATED_KEYS.has(c.key) ? fig(await isolatedServer.client(NVMEDRV, ['--socket', isolatedServer.socket, ...args(c, seconds)])) : undefined;
        const workers = NVME_WORKER_KEYS.has(c.key) ? fig(await workerServer.client(NVMEDRV, ['--socket', workerServer.socket, ...args(c, seconds)])) : undefined;
        rs.get(c.key)!.push({ load, floor, muser, isolated, workers });
      }
    }
    const med = (fs: NvmeFig[]): NvmeFig => medianFields(fs);
    return NVME_CONFIGS.map((config) => {
      const rounds = rs.get(config.key)!;
      return {
        config,
        rounds,
        floor: med(rounds.map((x) => x.floor)),
        muser: med(rounds.map((x) => x.muser)),
        iopsVsFloor: median(rounds.map((x) => x.muser.iops / x.floor.iops)),
        p50VsFloor: median(rounds.map((x) => x.muser.p50 / x.floor.p50)),
        load: median(rounds.map((x) => x.load)),
        ...(NVME_ISOLATED_KEYS.has(config.key)
          ? { isolated: med(rounds.map((x) => x.isolated!)), isolatedVsMuser: median(rounds.map((x) => x.isolated!.iops / x.muser.iops)) }
          : {}),
        ...(NVME_WORKER_KEYS.has(config.key) ? { workers: med(rounds.map((x) => x.workers!)), workersVsMuser: median(rounds.map((x) => x.workers!.iops / x.muser.iops)) } : {}),
      };
    });
  } finally {
    await server.stop();
    await isolatedServer.stop();
    await workerServer.stop();
  }
}

/** Doorbells by message against the mapped doorbell page: QD1 and QD32 reads on one queue, no shadow doorbells. */
const DOORBELL_CONFIGS = [
  { label: 'read QD1, 1 queue', qd: 1 },
  { label: 'read QD32, 1 queue', qd: 32 },
];

/**
 * `muser run nvme --poll` with the driver's posted REGION_WRITE doorbells
 * (what QEMU sends) against `muser run nvme --poll --mmap-doorbells` with
 * the driver storing into the mapped page, paired per round, with each
 * server's CPU.
 */
export async function measureNvmeDoorbells(dir: string, rounds: number, scale: number, log: (s: string) => void): Promise<DoorbellRow[]> {
  const runArgs = ['--size', `${DISK_MIB}M`, '--queues', '2', '--poll'];
  const messages = await CliServer.start(join(dir, 'nvme-db-msg.sock'), DEVICE_CPU, runArgs, 'nvme');
  const mapped = await CliServer.start(join(dir, 'nvme-db-map.sock'), DEVICE_CPU, [...runArgs, '--mmap-doorbells'], 'nvme');
  const seconds = Math.max(1, Math.round(scale * 2));
  const run = async (s: CliServer, qd: number, map: boolean): Promise<DoorbellFig> => {
    const c = { key: '', label: '', queues: 1, qd, shadow: false };
    const r = await s.clientWithCpu(NVMEDRV, ['--socket', s.socket, ...args(c, seconds), ...(map ? ['--mmap-doorbells'] : [])]);
    return doorbellFig(r, map ? 'stores_per_op' : 'doorbells_per_op');
  };
  try {
    for (const [s, map] of [[messages, false], [mapped, true]] as const) await run(s, 32, map); // warm-up
    const per = DOORBELL_CONFIGS.map(() => [] as DoorbellRound[]);
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: NVMe doorbells by message and in the mapped page (--poll)`);
      for (const [i, c] of DOORBELL_CONFIGS.entries()) {
        const load = loadAverage();
        // The order alternates per round: neither variant always runs on a warmer machine.
        const first = r % 2 === 0;
        const a = await run(first ? messages : mapped, c.qd, !first);
        const b = await run(first ? mapped : messages, c.qd, first);
        per[i].push({ load, messages: first ? a : b, mapped: first ? b : a });
      }
    }
    return DOORBELL_CONFIGS.map((c, i) => doorbellRow(c.label, per[i]));
  } finally {
    await messages.stop();
    await mapped.stop();
  }
}
