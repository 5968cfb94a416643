/**
 * Migration for devices that write no migration code: their state is the
 * bytes of their memory-backed regions, `device.state` (plain data, as
 * JSON), config space (with MSI-X table and PBA), the stored values of
 * their register maps, and interrupts raised but not yet delivered.
 *
 * Image format (little-endian), streamed lazily while the client reads:
 *
 *   "MUSERMIG" | u32 version (1) | u32 section count | sections
 *   section: u16 kind | u16 0 | u32 id | u64 length | length bytes
 *   kinds: 1 region memory (id = region index), 2 config snapshot,
 *          3 device.state JSON, 4 pending interrupts JSON [[index, vector], ...],
 *          5 register values JSON { "BAR0": { name: value }, "config": ... }
 *            (only from a device with register maps; see RegisterMap.saveValues)
 *
 * A stream may hold several images back to back (a PRE_COPY image, then the
 * STOP_COPY one). Loading streams: region bytes go straight into region
 * memory as they arrive (the device is RESUMING: its old state is being
 * replaced anyway), the small sections are kept and applied at the end,
 * the last of each kind winning. A malformed stream fails the load and the
 * device enters ERROR.
 */
import type { Device } from '../device/device.js';
import { DeviceError, Errno } from '../device/errors.js';
import { IrqIndex } from '../device/irqs.js';
import type { MigrationLoader } from '../device/migration-spec.js';

const MAGIC = Buffer.from('MUSERMIG', 'latin1');
const VERSION = 1;
const HEAD = 16;
const SECTION_HEAD = 16;
/** Largest small (config, state, interrupts) section accepted. */
const MAX_SMALL_SECTION = 16 * 1024 * 1024;

const enum Kind {
  REGION = 1,
  CONFIG = 2,
  STATE = 3,
  IRQS = 4,
  REGISTERS = 5,
}
/** The order small sections are applied in when loading ends. */
const SMALL_KINDS = [Kind.CONFIG, Kind.STATE, Kind.REGISTERS, Kind.IRQS];

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
    for (let v = 0; v < device.irqs.count(index); v++) if (device.irqPending(index, v)) out.push([index, v]);
  }
  return out;
}

/** The default save: one image, produced lazily. */
export function* saveDefault(device: Device): Generator<Uint8Array> {
  const regions = device.regions.filter((r) => r?.memory !== undefined);
  const config = device.config.snapshot();
  const state = Buffer.from(JSON.stringify(device.state ?? {}), 'utf8');
  const irqs = Buffer.from(JSON.stringify(pendingInterrupts(device)), 'utf8');
  const maps = device.registerMaps;
  const registers = maps.length > 0 ? Buffer.from(JSON.stringify(Object.fromEntries(maps.map((p) => [p.where, p.map.saveValues()]))), 'utf8') : undefined;
  const head = Buffer.alloc(HEAD);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(VERSION, 8);
  head.writeUInt32LE(regions.length + 3 + (registers ? 1 : 0), 12);
  yield head;
  for (const r of regions) {
    const mem = r!.memory!.bytes;
    yield sectionHead(Kind.REGION, r!.index, mem.length);
    // The memory itself, no copy: each MIG_DATA_READ reply copies its piece
    // as it is sent (the device is stopped in STOP_COPY; PRE_COPY data is
    // a best-effort early copy by definition).
    yield mem;
  }
  yield sectionHead(Kind.CONFIG, 0, config.length);
  yield config;
  yield sectionHead(Kind.STATE, 0, state.length);
  yield state;
  if (registers) {
    yield sectionHead(Kind.REGISTERS, 0, registers.length);
    yield registers;
  }
  yield sectionHead(Kind.IRQS, 0, irqs.length);
  yield irqs;
}

function bad(message: string): never {
  throw new DeviceError(Errno.EINVAL, `migration data: ${message}`);
}

function parseJson(data: Uint8Array, what: string): unknown {
  try {
    return JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8'));
  } catch {
    return bad(`${what} is not JSON`);
  }
}

/** Checks a small section now; returns how to apply it at the end. */
function smallSection(device: Device, kind: number, data: Uint8Array): () => void {
  switch (kind) {
    case Kind.CONFIG:
      return () => {
        try {
          device.config.restore(data);
        } catch (e) {
          bad(`config space: ${(e as Error).message}`);
        }
      };
    case Kind.STATE: {
      const v = parseJson(data, 'device state');
      if (v === null || typeof v !== 'object' || Array.isArray(v)) bad('device state is not an object');
      return () => {
        // Keep the object's identity: device code may hold it.
        const state = device.state;
        for (const k of Object.keys(state)) delete state[k];
        Object.assign(state, v);
      };
    }
    case Kind.REGISTERS: {
      const v = parseJson(data, 'register values');
      if (v === null || typeof v !== 'object' || Array.isArray(v)) bad('register values are not an object');
      const loads = Object.entries(v as Record<string, unknown>).map(([where, values]) => {
        const map = device.registerMaps.find((p) => p.where === where)?.map;
        if (!map) bad(`register values for ${where}, which has no register map here`);
        return () => map.loadValues(values as Record<string, string>);
      });
      return () => {
        try {
          for (const load of loads) load();
        } catch (e) {
          bad((e as Error).message);
        }
      };
    }
    case Kind.IRQS: {
      const v = parseJson(data, 'interrupts');
      if (!Array.isArray(v)) bad('interrupts are not a list');
      const list = v.map((e: unknown) => {
        if (!Array.isArray(e) || e.length !== 2 || !Number.isInteger(e[0]) || !Number.isInteger(e[1])) bad('bad interrupt entry');
        const [index, vector] = e as [number, number];
        if (index < 0 || index > IrqIndex.REQ || vector < 0 || vector >= device.irqs.count(index)) bad(`no interrupt ${index}/${vector} here`);
        return [index, vector] as const;
      });
      // The device is stopped while loading: these are deferred and fire when it runs.
      return () => {
        for (const [index, vector] of list) device.triggerIrq(index, vector);
      };
    }
    default:
      return bad(`unknown section kind ${kind}`);
  }
}

/**
 * The default loader: parses the stream as it comes, region bytes straight
 * into region memory, the rest applied at the end. The regions in
 * `keepRegions` keep the bytes they hold (their sections are checked and
 * skipped): under `--isolate`, memory a successor adopted holds newer
 * bytes than any checkpoint, the guest's stores included.
 */
export function defaultLoader(device: Device, keepRegions: ReadonlySet<number> = new Set()): MigrationLoader {
  let head = Buffer.alloc(0);
  /** The current section's bytes go nowhere (a region in keepRegions). */
  let skipping = false;
  /** Sections left in the current image; -1 between images. */
  let sections = -1;
  let images = 0;
  let target: Uint8Array | undefined;
  let small: { kind: number; data: Buffer } | undefined;
  let filled = 0;
  let left = 0;
  const last = new Map<number, () => void>();

  /** Consumes header bytes into `head` until it holds `n`; returns the bytes used. */
  const gather = (chunk: Uint8Array, at: number, n: number): number => {
    const take = Math.min(n - head.length, chunk.length - at);
    head = Buffer.concat([head, chunk.subarray(at, at + take)]);
    return take;
  };

  const sectionDone = (): void => {
    if (small) last.set(small.kind, smallSection(device, small.kind, small.data));
    small = undefined;
    target = undefined;
    skipping = false;
    if (--sections === 0) sections = -1;
  };

  return {
    write(chunk) {
      let at = 0;
      while (at < chunk.length) {
        if (left > 0) {
          const take = Math.min(left, chunk.length - at);
          if (!skipping) (target ?? small!.data).set(chunk.subarray(at, at + take), filled);
          filled += take;
          left -= take;
          at += take;
          if (left === 0) sectionDone();
          continue;
        }
        if (sections < 0) {
          at += gather(chunk, at, HEAD);
          if (head.length < HEAD) break;
          if (!head.subarray(0, 8).equals(MAGIC)) bad(`no image header after ${images} image(s)`);
          const version = head.readUInt32LE(8);
          if (version !== VERSION) bad(`image version ${version} unknown`);
          sections = head.readUInt32LE(12);
          head = Buffer.alloc(0);
          images++;
          if (sections === 0) sections = -1;
          continue;
        }
        at += gather(chunk, at, SECTION_HEAD);
        if (head.length < SECTION_HEAD) break;
        const kind = head.readUInt16LE(0);
        const id = head.readUInt32LE(4);
        const length = head.readUInt32LE(8) + head.readUInt32LE(12) * 0x1_0000_0000;
        head = Buffer.alloc(0);
        if (kind === Kind.REGION) {
          const mem = device.regions[id]?.memory;
          if (!mem) bad(`region ${id} has no memory on this device`);
          if (mem.bytes.length !== length) bad(`region ${id} is ${length} bytes, here ${mem.bytes.length}`);
          if (keepRegions.has(id)) skipping = true;
          else target = mem.bytes;
        } else {
          if (!SMALL_KINDS.includes(kind)) bad(`unknown section kind ${kind}`);
          if (length > MAX_SMALL_SECTION) bad(`a ${length}-byte section of kind ${kind}`);
          small = { kind, data: Buffer.alloc(length) };
        }
        filled = 0;
        left = length;
        if (left === 0) sectionDone();
      }
    },
    end() {
      if (images === 0) bad('empty');
      if (sections >= 0 || head.length > 0 || left > 0) bad('the stream ends inside an image');
      for (const kind of SMALL_KINDS) last.get(kind)?.();
    },
  };
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
