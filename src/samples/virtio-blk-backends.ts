/**
 * The block backends `muser run virtio-blk` serves from: a raw image file
 * (`--image`), a RAM disk (`--size`) or an NBD export (`--nbd URI`). They live in src/block/; this is the
 * one place the virtio-blk sample reaches for them, loaded on demand.
 */
import type { BlockBackend } from '../block/backend.js';
import type { Sample } from './index.js';
import { virtioBlk } from './virtio-blk.js';

interface FileModule {
  openFileBackend(path: string, options: { readOnly?: boolean }): Promise<BlockBackend>;
}

interface RamModule {
  ramBackend(size: number): BlockBackend;
}

interface NbdModule {
  openNbdBackend(uri: string, options: { readOnly?: boolean }): Promise<BlockBackend>;
}

// Specifiers in variables: resolved at run time, so this sample builds
// on its own while src/block/file.ts and src/block/ram.ts come separately.
const FILE_MODULE = '../block/file.js';
const RAM_MODULE = '../block/ram.js';
const NBD_MODULE = '../block/nbd/index.js';

/** Parses a size like 512, 64K, 64M or 2G (powers of 1024). */
export function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m) throw new Error(`bad size '${text}' (use N, NK, NM or NG)`);
  const scale = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2].toUpperCase() as '' | 'K'];
  const n = Number(m[1]) * scale;
  if (!Number.isSafeInteger(n) || n <= 0 || n % 512 !== 0) throw new Error(`size ${text} must be a positive multiple of 512 bytes`);
  return n;
}

/** Opens the backend the command line asks for. */
export async function openBlockBackend(o: { image?: string; size?: string; nbd?: string; readOnly: boolean }): Promise<BlockBackend> {
  const chosen = [o.image, o.size, o.nbd].filter((v) => v !== undefined).length;
  if (chosen > 1) throw new Error('virtio-blk takes one of --image, --size or --nbd');
  if (o.nbd !== undefined) {
    const { openNbdBackend } = (await import(NBD_MODULE)) as NbdModule;
    return openNbdBackend(o.nbd, { readOnly: o.readOnly });
  }
  if (o.image !== undefined) {
    const { openFileBackend } = (await import(FILE_MODULE)) as FileModule;
    return openFileBackend(o.image, { readOnly: o.readOnly });
  }
  if (o.size !== undefined) {
    const size = parseSize(o.size);
    const { ramBackend } = (await import(RAM_MODULE)) as RamModule;
    return ramBackend(size);
  }
  throw new Error('virtio-blk needs --image <file>, --size <N[KMG]> or --nbd <uri>');
}

/** `muser run virtio-blk <socket> (--image <file> | --size <N> | --nbd <uri>) [--read-only] [--queues N]`. */
export const virtioBlkSample: Sample = {
  description: 'virtio-blk disk from a raw image file (--image), a RAM disk (--size) or an NBD export (--nbd)',
  options: {
    image: { type: 'string' },
    size: { type: 'string' },
    nbd: { type: 'string' },
    'read-only': { type: 'boolean' },
    queues: { type: 'string' },
  },
  optionHelp: [
    '--image <file>     serve a raw image file',
    '--size <N[KMG]>    serve a RAM disk of this size',
    '--nbd <uri>        serve an NBD export: nbd://host:port/export or nbd+unix:///export?socket=/path',
    '--read-only        refuse writes',
    '--queues <N>       request queues (default 1)',
  ],
  async create({ values }) {
    const queues = values.queues === undefined ? 1 : Number(values.queues);
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new Error(`--queues must be 1..64, got ${String(values.queues)}`);
    const readOnly = values['read-only'] === true;
    const backend = await openBlockBackend({ image: str(values.image), size: str(values.size), nbd: str(values.nbd), readOnly });
    return virtioBlk({ backend, queues, readOnly });
  },
};

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
