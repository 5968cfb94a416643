/** The disk of a block sample (virtio-blk, nvme): `--image`, `--size` or `--nbd`, from src/block/. */
import { memfdBackend, openFileBackend, openNbdBackend, ramBackend, type BlockBackend } from '../index.js';

/** Parses a size like 512, 64K, 64M or 2G (powers of 1024). */
export function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m) throw new Error(`bad size '${text}' (use N, NK, NM or NG)`);
  const scale = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2].toUpperCase() as '' | 'K'];
  const n = Number(m[1]) * scale;
  if (!Number.isSafeInteger(n) || n <= 0 || n % 512 !== 0) throw new Error(`size ${text} must be a positive multiple of 512 bytes`);
  return n;
}

/**
 * Opens the backend the command line asks for. `shared`: worker threads
 * will open it too (a RAM disk is then a memfd; NBD is refused).
 */
export async function openBlockBackend(o: { image?: string; size?: string; nbd?: string; readOnly: boolean; shared?: boolean }): Promise<BlockBackend> {
  const chosen = [o.image, o.size, o.nbd].filter((v) => v !== undefined).length;
  if (chosen > 1) throw new Error('a disk takes one of --image, --size or --nbd');
  if (o.nbd !== undefined && o.shared) throw new Error('worker threads serve --image or --size disks, not --nbd');
  if (o.nbd !== undefined) return openNbdBackend(o.nbd, { readOnly: o.readOnly });
  if (o.image !== undefined) return openFileBackend(o.image, { readOnly: o.readOnly });
  if (o.size !== undefined) return o.shared ? memfdBackend(parseSize(o.size), { readOnly: o.readOnly }) : ramBackend(parseSize(o.size), { readOnly: o.readOnly });
  throw new Error('a disk needs --image <file>, --size <N[KMG]> or --nbd <uri>');
}
