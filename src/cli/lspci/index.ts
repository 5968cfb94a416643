/**
 * `muser lspci <socket>`: connects to a vfio-user device and prints its
 * config space decoded like `lspci -vv`, or as data.
 */
import { Client } from '../../client/client.js';
import { collectSnapshot } from './collect.js';
import { decodeLspci } from './decode.js';
import { formatLspci, formatLspciJson } from './format.js';
import { dumpLength, formatHexDump } from './hexdump.js';
import type { LspciData, LspciSnapshot } from './types.js';

export type { LspciBar, LspciCapability, LspciData, LspciSnapshot } from './types.js';
export { collectSnapshot, probeBars } from './collect.js';
export { decodeLspci } from './decode.js';
export { formatLspci, formatLspciJson } from './format.js';
export { walkExtended, walkStandard, MAX_CAPS } from './chain.js';

/** Options for {@link lspci}. */
export interface LspciOptions {
  /** Print {@link LspciData} as JSON instead of text. */
  json?: boolean;
  /** Append a hex dump, as `lspci -x` (1: the 64-byte header), `-xxx` (3: 256 bytes), `-xxxx` (4: all). */
  hexDump?: number;
}

/** Connects to `path`, collects a snapshot, and disconnects. */
export async function lspciSnapshot(path: string): Promise<LspciSnapshot> {
  const client = await Client.connect(path);
  try {
    return await collectSnapshot(client);
  } finally {
    client.close();
  }
}

/** The decoded device at `path` in machine-readable form. */
export async function lspciData(path: string): Promise<LspciData> {
  return decodeLspci(await lspciSnapshot(path));
}

/** The `lspci -vv`-like text (or JSON with `json`) for the device at `path`. */
export async function lspci(path: string, options: LspciOptions = {}): Promise<string> {
  const snapshot = await lspciSnapshot(path);
  if (options.json) return formatLspciJson(decodeLspci(snapshot));
  const dump = formatHexDump(snapshot.config, dumpLength(options.hexDump ?? 0, snapshot.config.length));
  return dump ? `${formatLspci(snapshot)}${dump}` : formatLspci(snapshot);
}
