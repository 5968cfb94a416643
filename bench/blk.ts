/**
 * virtio-blk data path: bench/bin/blkdrv plays the guest's driver (guest
 * RAM in a sealed memfd, ioeventfd kicks, MSI-X eventfds) against `muser
 * run virtio-blk --size 64M --queues 2` (with and without `--poll`) and
 * against its floor, a forked C responder doing the same ring work. Driver
 * on CPU 0, device on CPU 1. 4 KiB random reads at QD 1, 32, 128 on 1 and 2
 * queues, 4 KiB random writes at QD 32 on one queue, and QD 32 reads with
 * EVENT_IDX negotiated (interrupt and kick suppression, as Linux uses).
 *
 * Queues on worker threads: `--queues 2 --workers 2`, QD 32 reads on one
 * queue (one thread busy) and on two (both), with the device pinned to
 * CPU 1 as above and with it free to use both CPUs (which the driver's
 * threads, pinned to CPU 0, share).
 *
 * Kicks by message (posted REGION_WRITE, what QEMU sends) against kicks
 * stored into the mapped notify page (`--mmap-doorbells`), both under
 * `--poll`, with the server's CPU.
 */
import { join } from 'node:path';
import { CliServer, loadAverage, median, medianFields, num, runJson, BLKDRV, type Json } from './proc.js';
import { doorbellFig, doorbellRow, type DoorbellFig, type DoorbellRound, type DoorbellRow } from './doorbells.js';

const DRIVER_CPU = 0;
const DEVICE_CPU = 1;
const DISK = '64M';
const DISK_MIB = 64;

export interface BlkFig {
  iops: number;
  p50: number;
  p99: number;
}

export interface BlkConfig {
  key: string;
  label: string;
  queues: number;
  qd: number;
  write: boolean;
  /** Negotiate VIRTIO_F_EVENT_IDX, as Linux guests do. */
  eventIdx?: boolean;
}

export const BLK_CONFIGS: BlkConfig[] = [
  { key: 'r_q1_qd1', label: 'read QD1, 1 queue', queues: 1, qd: 1, write: false },
  { key: 'r_q1_qd32', label: 'read QD32, 1 queue', queues: 1, qd: 32, write: false },
  { key: 'r_q1_qd128', label: 'read QD128, 1 queue', queues: 1, qd: 128, write: false },
  { key: 'r_q2_qd1', label: 'read QD1, 2 queues', queues: 2, qd: 1, write: false },
  { key: 'r_q2_qd32', label: 'read QD32, 2 queues', queues: 2, qd: 32, write: false },
  { key: 'r_q2_qd128', label: 'read QD128, 2 queues', queues: 2, qd: 128, write: false },
  { key: 'w_q1_qd32', label: 'write QD32, 1 queue', queues: 1, qd: 32, write: true },
  { key: 'r_q1_qd32_ei', label: 'read QD32, 1 queue, EVENT_IDX', queues: 1, qd: 32, write: false, eventIdx: true },
];

/** Queues on worker threads: QD32 reads on 1 and on 2 queues. */
export interface BlkWorkerRow {
  label: string;
  /** Where the device may run: taskset CPU list. */
  cpus: string;
  q1: BlkFig;
  q2: BlkFig;
  /** Median of per-round 2-queue / 1-queue IOPS. */
  scaling: number;
  load: number;
}

export interface BlkRound {
  load: number;
  floor: BlkFig;
  muser: BlkFig;
  muserPoll: BlkFig;
  /** The same run against `muser run --isolate virtio-blk` (rows in BLK_ISOLATED_KEYS only). */
  isolated?: BlkFig;
}

/** Rows also measured with the device in an isolated child process (`--isolate`, inflight logs on). */
export const BLK_ISOLATED_KEYS = new Set(['r_q1_qd1', 'r_q1_qd32', 'r_q1_qd128', 'r_q2_qd128']);

export interface BlkRow {
  config: BlkConfig;
  rounds: BlkRound[];
  floor: BlkFig;
  muser: BlkFig;
  muserPoll: BlkFig;
  /** Medians of per-round ratios. */
  iopsVsFloor: number;
  pollIopsVsFloor: number;
  p50VsFloor: number;
  pollP50VsFloor: number;
  load: number;
  /** `--isolate`'s figure and its IOPS / in-process IOPS (median of per-round ratios), for BLK_ISOLATED_KEYS. */
  isolated?: BlkFig;
  isolatedVsMuser?: number;
}

const fig = (j: Json): BlkFig => ({ iops: num(j, 'iops'), p50: num(j, 'p50_us'), p99: num(j, 'p99_us') });

function args(c: BlkConfig, ops: number): string[] {
  return ['--queues', String(c.queues), '--qd', String(c.qd), '--ops', String(ops), '--disk-mib', String(DISK_MIB), '--cpu', String(DRIVER_CPU), ...(c.write ? ['--write'] : []), ...(c.eventIdx ? ['--event-idx'] : [])];
}

const WORKER_SETUPS = [
  { label: 'muser --workers 2, device on CPU 1', cpus: String(DEVICE_CPU) },
  { label: 'muser --workers 2, device on CPUs 0-1', cpus: `${DRIVER_CPU},${DEVICE_CPU}` },
];

/** Interleaved rounds of QD32 reads on 1 and 2 queues against `--workers 2` servers. */
export async function measureBlkWorkers(dir: string, rounds: number, scale: number, log: (s: string) => void): Promise<BlkWorkerRow[]> {
  const servers: CliServer[] = [];
  const q1: BlkConfig = { key: 'w_q1', label: '', queues: 1, qd: 32, write: false };
  const q2: BlkConfig = { key: 'w_q2', label: '', queues: 2, qd: 32, write: false };
  const n = Math.max(100, Math.round(20000 * scale));
  try {
    for (const [i, w] of WORKER_SETUPS.entries()) {
      servers.push(await CliServer.start(join(dir, `blk-workers${i}.sock`), w.cpus, ['--size', DISK, '--queues', '2', '--workers', '2'], 'virtio-blk'));
    }
    const drive = (s: CliServer, c: BlkConfig, ops: number): Promise<Json> => s.client(BLKDRV, ['--socket', s.socket, ...args(c, ops)]);
    for (const s of servers) await drive(s, { ...q2, write: true }, n);
    const per = WORKER_SETUPS.map(() => [] as { q1: BlkFig; q2: BlkFig; load: number }[]);
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: virtio-blk queues on worker threads`);
      for (const [i, s] of servers.entries()) {
        const load = loadAverage();
        per[i].push({ load, q1: fig(await drive(s, q1, n)), q2: fig(await drive(s, q2, n)) });
      }
    }
    return WORKER_SETUPS.map((w, i) => ({
      label: w.label,
      cpus: w.cpus,
      q1: medianFields(per[i].map((x) => x.q1)),
      q2: medianFields(per[i].map((x) => x.q2)),
      scaling: median(per[i].map((x) => x.q2.iops / x.q1.iops)),
      load: median(per[i].map((x) => x.load)),
    }));
  } finally {
    for (const s of servers) await s.stop();
  }
}

/** Runs `rounds` interleaved rounds (floor, muser, muser --poll per config). */
export async function measureBlk(dir: string, rounds: number, scale: number, log: (s: string) => void): Promise<BlkRow[]> {
  const runArgs = ['--size', DISK, '--queues', '2'];
  const plain = await CliServer.start(join(dir, 'blk.sock'), DEVICE_CPU, runArgs, 'virtio-blk');
  const poll = await CliServer.start(join(dir, 'blk-poll.sock'), DEVICE_CPU, [...runArgs, '--poll'], 'virtio-blk');
  const isolated = await CliServer.start(join(dir, 'blk-iso.sock'), DEVICE_CPU, runArgs, 'virtio-blk', ['--isolate']);
  const ops = (c: BlkConfig): number => Math.max(100, Math.round((c.qd === 1 ? 4000 : 20000) * scale));
  const drive = (s: CliServer, c: BlkConfig, n: number): Promise<Json> => s.client(BLKDRV, ['--socket', s.socket, ...args(c, n)]);
  try {
    // Untimed warm-up: JIT, and the RAM disk's pages touched once.
    for (const s of [plain, poll, isolated]) await drive(s, { key: 'warm', label: '', queues: 1, qd: 32, write: true }, Math.round(20000 * Math.max(scale, 0.5)));
    const rs = new Map<string, BlkRound[]>(BLK_CONFIGS.map((c) => [c.key, []]));
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: virtio-blk data path (driver CPU ${DRIVER_CPU}, device CPU ${DEVICE_CPU})`);
      for (const c of BLK_CONFIGS) {
        const load = loadAverage();
        const floor = fig(await runJson(BLKDRV, ['--responder', '--server-cpu', String(DEVICE_CPU), ...args(c, ops(c) * 4)]));
        const muser = fig(await drive(plain, c, ops(c)));
        const muserPoll = fig(await drive(poll, c, ops(c)));
        const iso = BLK_ISOLATED_KEYS.has(c.key) ? fig(await drive(isolated, c, ops(c))) : undefined;
        rs.get(c.key)!.push({ load, floor, muser, muserPoll, isolated: iso });
      }
    }
    const med = (fs: BlkFig[]): BlkFig => medianFields(fs);
    return BLK_CONFIGS.map((config) => {
      const rounds = rs.get(config.key)!;
      return {
        config,
        rounds,
        floor: med(rounds.map((x) => x.floor)),
        muser: med(rounds.map((x) => x.muser)),
        muserPoll: med(rounds.map((x) => x.muserPoll)),
        iopsVsFloor: median(rounds.map((x) => x.muser.iops / x.floor.iops)),
        pollIopsVsFloor: median(rounds.map((x) => x.muserPoll.iops / x.floor.iops)),
        p50VsFloor: median(rounds.map((x) => x.muser.p50 / x.floor.p50)),
        pollP50VsFloor: median(rounds.map((x) => x.muserPoll.p50 / x.floor.p50)),
        load: median(rounds.map((x) => x.load)),
        ...(BLK_ISOLATED_KEYS.has(config.key)
          ? { isolated: med(rounds.map((x) => x.isolated!)), isolatedVsMuser: median(rounds.map((x) => x.isolated!.iops / x.muser.iops)) }
          : {}),
      };
    });
  } finally {
    await plain.stop();
    await poll.stop();
    await isolated.stop();
  }
}

/** Kicks by message against the mapped notify page: QD1 and QD32 reads on one queue. */
const KICK_CONFIGS: BlkConfig[] = [
  { key: 'kick_qd1', label: 'read QD1, 1 queue', queues: 1, qd: 1, write: false },
  { key: 'kick_qd32', label: 'read QD32, 1 queue', queues: 1, qd: 32, write: false },
];

/**
 * `muser run virtio-blk --poll` with posted REGION_WRITE kicks against
 * `--poll --mmap-doorbells` with kicks stored into the mapped notify page,
 * paired per round, with each server's CPU.
 */
export async function measureBlkDoorbells(dir: string, rounds: number, scale: number, log: (s: string) => void): Promise<DoorbellRow[]> {
  const runArgs = ['--size', DISK, '--queues', '2', '--poll'];
  const messages = await CliServer.start(join(dir, 'blk-db-msg.sock'), DEVICE_CPU, runArgs, 'virtio-blk');
  const mapped = await CliServer.start(join(dir, 'blk-db-map.sock'), DEVICE_CPU, [...runArgs, '--mmap-doorbells'], 'virtio-blk');
  const ops = (c: BlkConfig): number => Math.max(100, Math.round((c.qd === 1 ? 4000 : 20000) * scale));
  const run = async (s: CliServer, c: BlkConfig, n: number, map: boolean): Promise<DoorbellFig> =>
    doorbellFig(await s.clientWithCpu(BLKDRV, ['--socket', s.socket, ...args(c, n), '--kick', map ? 'mapped' : 'posted']), 'kicks_per_op');
  try {
    for (const [s, map] of [[messages, false], [mapped, true]] as const) await run(s, KICK_CONFIGS[1], ops(KICK_CONFIGS[1]), map); // warm-up
    const per = KICK_CONFIGS.map(() => [] as DoorbellRound[]);
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: virtio-blk kicks by message and in the mapped notify page (--poll)`);
      for (const [i, c] of KICK_CONFIGS.entries()) {
        const load = loadAverage();
        const first = r % 2 === 0;
        const a = await run(first ? messages : mapped, c, ops(c), !first);
        const b = await run(first ? mapped : messages, c, ops(c), first);
        per[i].push({ load, messages: first ? a : b, mapped: first ? b : a });
      }
    }
    return KICK_CONFIGS.map((c, i) => doorbellRow(c.label, per[i]));
  } finally {
    await messages.stop();
    await mapped.stop();
  }
}
