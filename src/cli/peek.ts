/**
 * `muser peek SOCK REGION OFFSET [--width N]` and `muser poke SOCK REGION
 * OFFSET VALUE [--width N]`: one register access, for a quick check without
 * writing a client. REGION is a number (VFIO index), `bar0`..`bar5` or
 * `config`; OFFSET and VALUE are decimal or 0x-hex; the width is 1, 2, 4
 * (default) or 8 bytes, little-endian.
 */
import { Client } from '../client/client.js';
import { UsageError } from './usage.js';

const REGION_NAMES: Record<string, number> = { bar0: 0, bar1: 1, bar2: 2, bar3: 3, bar4: 4, bar5: 5, rom: 6, config: 7, vga: 8 };

interface Access {
  socket: string;
  region: number;
  offset: number;
  width: 1 | 2 | 4 | 8;
  value?: bigint;
}

function parse(command: 'peek' | 'poke', args: readonly string[]): Access {
  let width = 4;
  const words: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--width' || a === '-w') width = Number(args[++i]);
    else if (a.startsWith('--width=')) width = Number(a.slice('--width='.length));
    else if (a.startsWith('-') && !/^-\d/.test(a)) throw new UsageError(`${command}: unknown flag ${a}`);
    else words.push(a);
  }
  const wanted = command === 'peek' ? 3 : 4;
  if (words.length !== wanted) throw new UsageError(`${command} needs ${command === 'peek' ? 'SOCKET REGION OFFSET' : 'SOCKET REGION OFFSET VALUE'} (got ${words.length} arguments)`);
  if (![1, 2, 4, 8].includes(width)) throw new UsageError(`${command}: --width must be 1, 2, 4 or 8, got ${String(width)}`);
  const [socket, regionWord, offsetWord, valueWord] = words;
  const region = REGION_NAMES[regionWord.toLowerCase()] ?? number(regionWord, 'REGION', command);
  const offset = number(offsetWord, 'OFFSET', command);
  const access: Access = { socket, region, offset, width: width as Access['width'] };
  if (valueWord !== undefined) {
    let value: bigint;
    try {
      value = BigInt(valueWord);
    } catch {
      throw new UsageError(`poke: VALUE '${valueWord}' is not a number`);
    }
    if (value < 0n || value >= 1n << BigInt(width * 8)) throw new UsageError(`poke: VALUE ${valueWord} does not fit in ${width} byte${width === 1 ? '' : 's'}`);
    access.value = value;
  }
  return access;
}

function number(word: string, what: string, command: string): number {
  const n = /^(0x[0-9a-f]+|\d+)$/i.test(word) ? Number(word) : NaN;
  if (!Number.isSafeInteger(n)) throw new UsageError(`${command}: ${what} '${word}' is not a number${what === 'REGION' ? ' (or bar0-bar5, config)' : ''}`);
  return n;
}

async function withClient<T>(socket: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await Client.connect(socket);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Reads one value; returns the line printed (`0x00000027`). */
export async function peek(args: readonly string[]): Promise<string> {
  const a = parse('peek', args);
  const bytes = await withClient(a.socket, (c) => c.regionRead(a.region, a.offset, a.width));
  return `0x${littleEndian(bytes).toString(16).padStart(a.width * 2, '0')}\n`;
}

/** Writes one value; returns the line printed. */
export async function poke(args: readonly string[]): Promise<string> {
  const a = parse('poke', args);
  const bytes = Buffer.alloc(a.width);
  for (let i = 0; i < a.width; i++) bytes[i] = Number((a.value! >> BigInt(i * 8)) & 0xffn);
  await withClient(a.socket, (c) => c.regionWrite(a.region, a.offset, bytes));
  return '';
}

function littleEndian(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}
