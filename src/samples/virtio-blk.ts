/**
 * `muser run virtio-blk`: the command-line face of the virtio-blk sample. A
 * raw image file (`--image`), a RAM disk (`--size`) or an NBD export
 * (`--nbd`), all from src/block/.
 */
import { virtioBlk, virtioQueueStats, type DeviceSpec } from '../index.js';
import { openBlockBackend } from './disk.js';
import type { Sample } from './sample.js';

/** `muser run virtio-blk <socket> (--image <file> | --size <N> | --nbd <uri>) [--read-only] [--queues N] [--workers [N]] [--mmap-doorbells] [--poll-us N]`. */
export const virtioBlkSample: Sample = {
  description: 'virtio-blk disk from a raw image file (--image), a RAM disk (--size) or an NBD export (--nbd)',
  options: {
    image: { type: 'string', description: 'serve a raw image file' },
    size: { type: 'string', description: 'serve a RAM disk of this size (N, NK, NM, NG)' },
    nbd: { type: 'string', description: 'serve an NBD export: nbd://host:port/export or nbd+unix:///export?socket=/path' },
    'read-only': { type: 'boolean', description: 'refuse writes' },
    queues: { type: 'string', description: 'request queues (default 1)' },
    workers: { type: 'string', optionalNumber: true, description: 'serve the queues on N worker threads, queue i on thread i % N (alone: one per queue; default: the main thread)' },
    stats: { type: 'boolean', description: 'print the requests each queue served, and on which thread, when a client leaves' },
    'mmap-doorbells': { type: 'boolean', description: 'map the notify page into the guest and watch it: kicks without exits or messages (use with --poll)' },
    'poll-us': { type: 'string', description: 'an idle queue polls its avail ring for N microseconds with kicks off (default: the --poll window; 0 never)' },
  },
  volatile: (values) => (values.size !== undefined ? 'the RAM disk (--size) lives in the child process' : undefined),
  async create(values) {
    const queues = values.queues === undefined ? 1 : Number(values.queues);
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new Error(`--queues must be 1..64, got ${String(values.queues)}`);
    const workers = values.workers === undefined ? 0 : values.workers === true ? queues : Number(values.workers);
    if (!Number.isInteger(workers) || workers < 0 || workers > queues) throw new Error(`--workers must be 0..${queues} (at most one per queue), got ${String(values.workers)}`);
    const readOnly = values['read-only'] === true;
    const backend = await openBlockBackend({ image: str(values.image), size: str(values.size), nbd: str(values.nbd), readOnly, shared: workers > 0 });
    const pollMicroseconds = values['poll-us'] === undefined ? undefined : Number(values['poll-us']);
    if (pollMicroseconds !== undefined && (!Number.isInteger(pollMicroseconds) || pollMicroseconds < 0 || pollMicroseconds > 10_000_000)) throw new Error(`--poll-us must be 0..10000000, got ${String(values['poll-us'])}`);
    const spec = virtioBlk({ backend, queues, readOnly, workers, mmapDoorbells: values['mmap-doorbells'] === true, pollMicroseconds });
    return values.stats === true ? withStats(spec) : spec;
  },
};

/** Prints `virtio-blk: stats q0=thread0:N q1=main:M ...` (requests served, cumulative) when a client leaves. */
function withStats(spec: DeviceSpec): DeviceSpec {
  const inner = spec.onDisconnect;
  spec.onDisconnect = (device) => {
    inner?.(device);
    const fields = virtioQueueStats(spec).map((c) => `q${c.queue}=${c.thread === 'main' ? 'main' : `thread${c.thread}`}:${c.requests}`);
    process.stderr.write(`virtio-blk: stats ${fields.join(' ')}\n`);
  };
  return spec;
}

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
