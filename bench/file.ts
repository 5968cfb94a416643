/**
 * File-backed virtio-blk: the same driver (bench/bin/blkdrv, 4 KiB random
 * reads, QD 32, one queue, CPU 0) against `muser run virtio-blk --image
 * <file>` (CPU 1, with and without `--poll`) on a 64 MiB image that sits in
 * the page cache, beside fio reading the same file at the same depth
 * (io_uring, buffered, pinned to CPU 1) as the anchor. Skipped, with a
 * note, when fio is not installed.
 */
import { spawnSync } from 'node:child_process';
import { openSync, writeSync, closeSync, readFileSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';
import { CliServer, loadAverage, median, medianFields, num, BLKDRV, BenchError } from './proc.js';

const IMAGE_MIB = 64;
const QD = 32;

export interface FileFig {
  iops: number;
  p50: number;
  p99: number;
}

export interface FileResult {
  rounds: { load: number; fio: FileFig; muser: FileFig; muserPoll: FileFig }[];
  fio: FileFig;
  muser: FileFig;
  muserPoll: FileFig;
  /** Median per-round ratio of the better of muser and muser --poll to fio. */
  bestVsFio: number;
}

export function haveFio(): boolean {
  return spawnSync('sh', ['-c', 'command -v fio'], { stdio: 'ignore' }).status === 0;
}

function makeImage(path: string): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < IMAGE_MIB; i++) {
    randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
  readFileSync(path); // into the page cache
}

function fio(image: string, seconds: number): FileFig {
  const r = spawnSync(
    'fio',
    ['--name=anchor', `--filename=${image}`, '--rw=randread', '--bs=4k', `--iodepth=${QD}`, '--ioengine=io_uring', '--direct=0', `--size=${IMAGE_MIB}M`, `--runtime=${seconds}`, '--time_based', '--cpus_allowed=1', '--output-format=json'],
    { encoding: 'utf8', timeout: (seconds + 30) * 1000 },
  );
  if (r.status !== 0) throw new BenchError(`fio failed: ${r.stderr}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { read: { iops: number; clat_ns: { percentile: Record<string, number> } } }[] };
  const read = j.jobs[0].read;
  return { iops: read.iops, p50: read.clat_ns.percentile['50.000000'] / 1000, p99: read.clat_ns.percentile['99.000000'] / 1000 };
}

export async function measureFile(dir: string, rounds: number, scale: number, log: (s: string) => void): Promise<FileResult> {
  const image = join(dir, 'disk.raw');
  makeImage(image);
  const plain = await CliServer.start(join(dir, 'file.sock'), 1, ['--image', image], 'virtio-blk');
  const poll = await CliServer.start(join(dir, 'file-poll.sock'), 1, ['--image', image, '--poll'], 'virtio-blk');
  const ops = String(Math.max(200, Math.round(20000 * scale)));
  const drive = async (s: CliServer): Promise<FileFig> => {
    const j = await s.client(BLKDRV, ['--socket', s.socket, '--qd', String(QD), '--ops', ops, '--disk-mib', String(IMAGE_MIB), '--cpu', '0']);
    return { iops: num(j, 'iops'), p50: num(j, 'p50_us'), p99: num(j, 'p99_us') };
  };
  try {
    for (const s of [plain, poll]) await drive(s); // warm-up
    const rs: FileResult['rounds'] = [];
    for (let r = 0; r < rounds; r++) {
      log(`round ${r + 1}/${rounds}: file-backed virtio-blk, QD${QD}, beside fio`);
      const load = loadAverage();
      const f = fio(image, Math.max(1, Math.round(2 * scale)));
      rs.push({ load, fio: f, muser: await drive(plain), muserPoll: await drive(poll) });
    }
    const med = (fs: FileFig[]): FileFig => medianFields(fs);
    return {
      rounds: rs,
      fio: med(rs.map((x) => x.fio)),
      muser: med(rs.map((x) => x.muser)),
      muserPoll: med(rs.map((x) => x.muserPoll)),
      bestVsFio: median(rs.map((x) => Math.max(x.muser.iops, x.muserPoll.iops) / x.fio.iops)),
    };
  } finally {
    await plain.stop();
    await poll.stop();
  }
}
