/**
 * `muser run nvme <socket> (--image <file> | --size <N>) [--read-only]
 * [--namespaces N] [--queues N] [--mmap-doorbells] [--ioeventfd-doorbells]
 * [--workers [N]]`: an NVMe controller that Linux's stock
 * `nvme` driver binds, serving a raw image file or RAM disks. With
 * `--namespaces N` an image is split into N equal namespaces; RAM disks
 * get N namespaces of `--size` each.
 */
import { memfdBackend, nvmeController, nvmeControllerOf, ramBackend, sliceBackend, type BlockBackend, type DeviceSpec } from '../index.js';
import { openBlockBackend, parseSize } from './disk.js';
import type { Sample } from './sample.js';

/** One option of the sample: its kind, what it does, and (for strings) its argument's name. */
interface NvmeOption {
  type: 'string' | 'boolean';
  description: string;
  arg?: string;
  /** The value may be left out (see SampleOption.optionalNumber). */
  optionalNumber?: boolean;
}

/** The sample's command-line options. */
export const NVME_OPTIONS: Record<string, NvmeOption> = {
  image: { type: 'string', arg: 'file', description: 'serve a raw image file (split evenly with --namespaces)' },
  size: { type: 'string', arg: 'N[KMG]', description: 'serve RAM disks of this size' },
  nbd: { type: 'string', arg: 'uri', description: 'serve an NBD export (split evenly with --namespaces)' },
  'read-only': { type: 'boolean', description: 'refuse writes (namespaces are write protected)' },
  namespaces: { type: 'string', arg: 'N', description: 'namespaces (default 1)' },
  queues: { type: 'string', arg: 'N', description: 'I/O queue pairs (default 4)' },
  serial: { type: 'string', arg: 'text', description: 'serial number reported by Identify (default muser-nvme)' },
  'no-shadow-doorbells': { type: 'boolean', description: 'do not offer Doorbell Buffer Config (every doorbell is a message)' },
  'poll-us': { type: 'string', arg: 'N', description: 'poll idle shadow doorbells for N microseconds before asking for doorbells (default 0)' },
  'mmap-doorbells': { type: 'boolean', description: 'map the doorbell page into the guest and watch it: doorbells without exits or messages (use with --poll)' },
  'ioeventfd-doorbells': { type: 'boolean', description: 'offer the I/O doorbells as ioeventfds (kicks; the value is read from the shadow doorbells, which the driver must configure first)' },
  workers: { type: 'string', arg: '[N]', optionalNumber: true, description: 'serve the I/O queues on N worker threads, queue y on thread (y-1) % N (alone: one per queue; default: the main thread)' },
  stats: { type: 'boolean', description: 'print the controller counters (doorbell messages, commands) when a client leaves' },
};

function count(v: string | boolean | undefined, name: string, max: number, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} must be 1..${max}, got ${String(v)}`);
  return n;
}

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

async function openNamespaces(o: { image?: string; size?: string; nbd?: string; readOnly: boolean; namespaces: number; shared: boolean }): Promise<BlockBackend[]> {
  // RAM disks: one per namespace, each of the given size (memfds when worker threads open them too); a file or an export is split evenly.
  if (o.size !== undefined && o.image === undefined && o.nbd === undefined) {
    const size = parseSize(o.size);
    return Array.from({ length: o.namespaces }, () => (o.shared ? memfdBackend(size, { readOnly: o.readOnly }) : ramBackend(size, { readOnly: o.readOnly })));
  }
  if (o.shared && o.namespaces > 1) throw new Error('--workers serves one namespace of an --image (worker threads open the file whole), or --size RAM disks');
  return sliceBackend(await openBlockBackend(o), o.namespaces);
}

/** Builds the sample's controller from its option values (as the command line gives them). */
export async function nvmeFromOptions(values: Readonly<Record<string, string | boolean | undefined>>): Promise<DeviceSpec> {
  const namespaces = count(values.namespaces, 'namespaces', 64, 1);
  const queues = count(values.queues, 'queues', 64, 4);
  const readOnly = values['read-only'] === true;
  const pollMicroseconds = values['poll-us'] === undefined ? 0 : Number(values['poll-us']);
  if (!Number.isInteger(pollMicroseconds) || pollMicroseconds < 0 || pollMicroseconds > 10_000_000) throw new Error(`--poll-us must be 0..10000000, got ${String(values['poll-us'])}`);
  const workers = values.workers === undefined ? 0 : values.workers === true ? queues : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 0 || workers > queues) throw new Error(`--workers must be 0..${queues} (at most one per queue), got ${String(values.workers)}`);
  const backends = await openNamespaces({ image: str(values.image), size: str(values.size), nbd: str(values.nbd), readOnly, namespaces, shared: workers > 0 });
  const spec: DeviceSpec = nvmeController({
    namespaces: backends,
    readOnly,
    queues,
    serial: str(values.serial),
    shadowDoorbells: values['no-shadow-doorbells'] !== true,
    pollMicroseconds,
    mmapDoorbells: values['mmap-doorbells'] === true,
    ioeventfdDoorbells: values['ioeventfd-doorbells'] === true,
    workers,
    // The counters behind "doorbell messages per I/O", printed when the client leaves.
    onDisconnectStats:
      values.stats === true
        ? (s) => process.stderr.write(`nvme: stats doorbell_writes=${s.doorbellWrites} io_doorbell_writes=${s.ioDoorbellWrites} mapped_doorbells=${s.mappedDoorbells} ioeventfd_kicks=${s.ioeventfdKicks} io_commands=${s.ioCommands} main_io_commands=${nvmeControllerOf(spec)?.stats.ioCommands ?? 0} shadow_reads=${s.shadowReads} commands=${s.commands} completions=${s.completions} interrupts=${s.interrupts}\n`)
        : undefined,
  });
  return spec;
}

/** The `nvme` sample. */
export const nvmeSample: Sample = {
  description: 'NVMe controller (Linux nvme driver) over a raw image file (--image) or RAM disks (--size)',
  options: NVME_OPTIONS,
  volatile: (values) => (values.size !== undefined && values.image === undefined && values.nbd === undefined ? 'the RAM disks (--size) live in the child process' : undefined),
  create: (values) => nvmeFromOptions(values),
};
