/**
 * Migration for devices that write no migration code: their state is the
 * bytes of their memory-backed regions, `device.state` (plain data, as
 * JSON), config space (with MSI-X table and PBA) and interrupts raised but
 * not yet delivered.
 *
 * Image format (little-endian), streamed lazily while the client reads:
 *
 *   "MUSERMIG" | u32 version (1) | u32 section count | sections
 *   section: u16 kind | u16 0 | u32 id | u64 length | length bytes
 *   kinds: 1 region memory (id = region index), 2 config snapshot,
 *          3 device.state JSON, 4 pending interrupts JSON [[index, vector], ...]
 *
 * A stream may hold several images back to back (a PRE_COPY image, then the
 * STOP_COPY one); they are checked first, then applied in order.
 */
import type { Device } from './device.js';
import { DeviceError, Errno } from './errors.js';
import { IrqIndex } from './irqs.js';
import type { MigrationLoader } from './migration-spec.js';

const MAGIC = Buffer.from('MUSERMIG', 'latin1');
const VERSION = 1;
const HEAD = 16;
const SECTION_HEAD = 16;
/** Bytes copied per chunk when streaming region memory. */
const PIECE = 256 * 1024;

const enum Kind {
  REGION = 1,
  CONFIG = 2,
  STATE = 3,
  IRQS = 4,
}

interface Section {
  kind: number;
  id: number;
  data: Uint8Array;
}

function sectionHead(kind: number, id: number, length: number): Buffer {
  const b = Buffer.alloc(SECTION_HEAD);
  b.writeUInt16LE(kind, 0);
  b.writeUInt32LE(id, 4);
  b.writeUInt32LE(length % 0x1_0000_0000, 8);
  b.writeUInt32LE(Math.floor(length / 0x1_0000_0000), 12);
  return b;
}

/** Interrupts raised and not delivered: deferred while stopped, or pending behind a mask. */
function pendingInterrupts(device: Device): [number, number][] {
  const out: [number, number][] = device.deferredInterrupts().map((t) => [t.index, t.vector]);
  for (const index of [IrqIndex.INTX, IrqIndex.MSI, IrqIndex.MSIX]) {
    for (let v = 0; v < device.irqs.count(index); v++) if (device.irqs.isPending(index, v)) out.push([index, v]);
  }
  return out;
}

/** The default save: one image, produced lazily. */
export function* saveDefault(device: Device): Generator<Uint8Array> {
  const regions = device.regions.filter((r) => r?.memory !== undefined);
  const config = device.config.snapshot();
  const state = Buffer.from(JSON.stringify(device.state ?? {}), 'utf8');
  const irqs = Buffer.from(JSON.stringify(pendingInterrupts(device)), 'utf8');
  const head = Buffer.alloc(HEAD);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(VERSION, 8);
  head.writeUInt32LE(regions.length + 3, 12);
  yield head;
  for (const r of regions) {
    const mem = r!.memory!.bytes;
    yield sectionHead(Kind.REGION, r!.index, mem.length);
    // Copies, taken as the client reads: the device is stopped in STOP_COPY.
    for (let off = 0; off < mem.length; off += PIECE) yield Buffer.from(mem.subarray(off, off + PIECE));
  }
  yield sectionHead(Kind.CONFIG, 0, config.length);
  yield config;
  yield sectionHead(Kind.STATE, 0, state.length);
  yield state;
  yield sectionHead(Kind.IRQS, 0, irqs.length);
  yield irqs;
}

function bad(message: string): never {
  throw new DeviceError(Errno.EINVAL, `migration data: ${message}`);
}

/** Splits a stream into sections, checking the framing of every image. */
function parse(data: Buffer): Section[] {
  if (data.length === 0) bad('empty');
  const out: Section[] = [];
  let at = 0;
  while (at < data.length) {
    if (data.length - at < HEAD || !data.subarray(at, at + 8).equals(MAGIC)) bad(`no image header at byte ${at}`);
    const version = data.readUInt32LE(at + 8);
    if (version !== VERSION) bad(`image version ${version} unknown`);
    const count = data.readUInt32LE(at + 12);
    at += HEAD;
    for (let i = 0; i < count; i++) {
      if (data.length - at < SECTION_HEAD) bad('truncated section header');
      const kind = data.readUInt16LE(at);
      const id = data.readUInt32LE(at + 4);
      const length = data.readUInt32LE(at + 8) + data.readUInt32LE(at + 12) * 0x1_0000_0000;
      at += SECTION_HEAD;
      if (length > data.length - at) bad(`section ${i} overruns the data`);
      out.push({ kind, id, data: data.subarray(at, at + length) });
      at += length;
    }
  }
  return out;
}

function parseJson(data: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8'));
  } catch {
    return bad(`${what} is not JSON`);
  }
}

/** Checks every section against this device; returns the apply steps in order. */
function plan(device: Device, sections: Section[]): (() => void)[] {
  const steps: (() => void)[] = [];
  for (const s of sections) {
    switch (s.kind) {
      case Kind.REGION: {
        const mem = device.regions[s.id]?.memory;
        if (!mem) bad(`region ${s.id} has no memory on this device`);
        if (mem.bytes.length !== s.data.length) bad(`region ${s.id} is ${s.data.length} bytes, here ${mem.bytes.length}`);
        steps.push(() => mem.bytes.set(s.data));
        break;
      }
      case Kind.CONFIG:
        steps.push(() => {
          try {
            device.config.restore(s.data);
          } catch (e) {
            bad(`config space: ${(e as Error).message}`);
          }
        });
        break;
      case Kind.STATE: {
        const v = parseJson(s.data, 'device state');
        if (v === null || typeof v !== 'object' || Array.isArray(v)) bad('device state is not an object');
        steps.push(() => {
          // Keep the object's identity: device code may hold it.
          const state = device.state;
          for (const k of Object.keys(state)) delete state[k];
          Object.assign(state, v);
        });
        break;
      }
      case Kind.IRQS: {
        const v = parseJson(s.data, 'interrupts');
        if (!Array.isArray(v)) bad('interrupts are not a list');
        const list = v.map((e: unknown) => {
          if (!Array.isArray(e) || e.length !== 2 || !Number.isInteger(e[0]) || !Number.isInteger(e[1])) bad('bad interrupt entry');
          const [index, vector] = e as [number, number];
          if (index < 0 || index > IrqIndex.REQ || vector < 0 || vector >= device.irqs.count(index)) bad(`no interrupt ${index}/${vector} here`);
          return [index, vector] as const;
        });
        // The device is stopped while loading: these are deferred and fire when it runs.
        steps.push(() => {
          for (const [index, vector] of list) device.triggerIrq(index, vector);
        });
        break;
      }
      default:
        bad(`unknown section kind ${s.kind}`);
    }
  }
  return steps;
}

/** The default load: checks everything, then applies it. */
export function loadDefault(data: Uint8Array, device: Device): void {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
  for (const step of plan(device, parse(buf))) step();
}

/** Collects a RESUMING stream, at most `limit` bytes, and hands it to `load` at the end. */
export function bufferingLoader(limit: number, load: (data: Uint8Array) => unknown): MigrationLoader {
  const chunks: Buffer[] = [];
  let total = 0;
  return {
    write(chunk) {
      if (total + chunk.length > limit) throw new DeviceError(Errno.ENOSPC, `migration data exceeds ${limit} bytes`);
      chunks.push(Buffer.from(chunk));
      total += chunk.length;
    },
    async end() {
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
      chunks.length = 0;
      await load(all);
    },
  };
}

/** A generous bound on the default stream: a few images of this device. */
export function defaultLimit(device: Device): number {
  const memory = device.regions.reduce((n, r) => n + (r?.memory?.bytes.length ?? 0), 0);
  return 4 * (memory + device.config.size + 1024 * 1024);
}
