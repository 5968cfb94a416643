/**
 * Reads what `lspci` needs from a connected device: config space, device
 * and region info, and BAR size masks, sized the way an OS sizes BARs.
 */
import type { Client } from '../../client/client.js';
import { PCI_NUM_BARS, PciCommand, PciHeader, barOffset } from '../../pci/regs.js';
import { closeAll } from '../../transport/channel.js';
import { isMem64 } from './bars.js';
import type { LspciSnapshot } from './types.js';

/** VFIO region index of PCI config space. */
export const CONFIG_REGION = 7;

const MAX_CONFIG = 4096;
const MIN_CONFIG = 0x40;

async function regionSize(client: Client, index: number): Promise<number> {
  const r = await client.regionInfo(index);
  if (r.fd !== undefined) closeAll([r.fd]);
  return r.info.size;
}

async function readConfig(client: Client, size: number): Promise<Buffer> {
  const chunk = Math.max(4, Math.min(size, client.server.maxDataXferSize ?? MAX_CONFIG));
  const parts: Buffer[] = [];
  for (let off = 0; off < size; off += chunk) parts.push(await client.regionRead(CONFIG_REGION, off, Math.min(chunk, size - off)));
  const config = Buffer.concat(parts);
  if (config.length !== size) throw new Error(`config space read returned ${config.length} of ${size} bytes`);
  return config;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
}

function u16(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v & 0xffff);
  return b;
}

/** Writes all-ones to `count` BAR dwords from BAR `i`, reads the masks back, restores the originals. */
async function sizeBar(client: Client, config: Buffer, i: number, count: number, masks: number[]): Promise<void> {
  const offsets = Array.from({ length: count }, (_, k) => barOffset(i + k));
  try {
    for (const off of offsets) await client.regionWrite(CONFIG_REGION, off, u32(0xffffffff));
    for (const [k, off] of offsets.entries()) masks[i + k] = (await client.regionRead(CONFIG_REGION, off, 4)).readUInt32LE(0);
  } finally {
    for (const off of offsets) await client.regionWrite(CONFIG_REGION, off, config.subarray(off, off + 4));
  }
}

/**
 * Sizes the six BARs of a type 0 header with memory and I/O decoding
 * turned off meanwhile; every register is restored afterwards.
 */
export async function probeBars(client: Client, config: Buffer): Promise<number[]> {
  const masks = new Array<number>(PCI_NUM_BARS).fill(0);
  if ((config[PciHeader.HEADER_TYPE]! & 0x7f) !== 0) return masks;
  const command = config.readUInt16LE(PciHeader.COMMAND);
  await client.regionWrite(CONFIG_REGION, PciHeader.COMMAND, u16(command & ~(PciCommand.IO | PciCommand.MEMORY)));
  try {
    for (let i = 0; i < PCI_NUM_BARS; i++) {
      const pair = isMem64(config.readUInt32LE(barOffset(i))) && i + 1 < PCI_NUM_BARS;
      await sizeBar(client, config, i, pair ? 2 : 1, masks);
      if (pair) i++;
    }
  } finally {
    await client.regionWrite(CONFIG_REGION, PciHeader.COMMAND, u16(command));
  }
  return masks;
}

/** Reads everything `lspci` decodes from a connected client. */
export async function collectSnapshot(client: Client): Promise<LspciSnapshot> {
  const info = await client.deviceInfo();
  const size = await regionSize(client, CONFIG_REGION);
  if (size < MIN_CONFIG) throw new Error(`config space region is ${size} bytes`);
  const config = await readConfig(client, Math.min(size, MAX_CONFIG));
  const regionSizes: number[] = [];
  for (let i = 0; i < PCI_NUM_BARS; i++) regionSizes.push(await regionSize(client, i));
  const barMasks = await probeBars(client, config);
  return { config, numRegions: info.numRegions, numIrqs: info.numIrqs, regionSizes, barMasks };
}
