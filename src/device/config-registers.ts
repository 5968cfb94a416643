/**
 * Config-space accesses: the standard model (header, capabilities, config
 * hooks) with the device's own config register table laid over it.
 *
 * Every byte of config space is one of: standard (the 64-byte header, a
 * capability, the extended list's head), a device register (an entry of
 * `configRegisters`, at its absolute offset), or unclaimed. An access is
 * split at those boundaries: register bytes go to the register map (hooks
 * get the Device, may be async, and trace under their real offset and
 * name), the rest to the standard model. Unclaimed bytes read as zero and
 * ignore writes, and count in the device's report of unmodeled accesses;
 * with a debug logger each such access is traced as
 * `config read reg=0x90 name=unclaimed ...`.
 */
import type { ConfigSpace } from '../pci/index.js';
import { PCI_CAP_START, PCI_EXT_CAP_START } from '../pci/regs.js';
import type { Logger } from './logger.js';
import type { RegisterMap } from './registers.js';
import { CONFIG_REGION } from './regions.js';
import type { Device, MaybePromise } from './types.js';

const STANDARD = 1;
const REGISTER = 2;
const UNCLAIMED = 0;

/** One run of bytes of the same kind inside an access. */
interface Segment {
  kind: number;
  start: number;
  length: number;
}

/** What owns each byte of a device's config space. */
export class ConfigLayout {
  private readonly owner: Uint8Array;

  /**
   * @throws RangeError naming both parties when a register lies in the
   *   header, on a capability, or outside config space.
   */
  constructor(
    config: ConfigSpace,
    readonly registers: RegisterMap<Device> | undefined,
  ) {
    this.owner = new Uint8Array(config.size);
    const names: string[] = new Array<string>(config.size);
    const claim = (start: number, size: number, name: string): void => {
      for (let i = start; i < start + size; i++) {
        this.owner[i] = STANDARD;
        names[i] = name;
      }
    };
    claim(0, PCI_CAP_START, 'the standard header (0x00-0x3f)');
    if (config.size > PCI_EXT_CAP_START) claim(PCI_EXT_CAP_START, 4, 'the extended capability list head (0x100-0x103)');
    for (const c of config.capabilities) claim(c.offset, c.length, `capability ${c.id} (${range(c.offset, c.length)})`);
    for (const r of registers?.layout() ?? []) {
      const where = `configRegisters: register ${r.name} (${range(r.offset, r.size)})`;
      if (r.offset < 0 || r.offset + r.size > config.size) throw new RangeError(`${where} lies outside the ${config.size}-byte config space`);
      for (let i = r.offset; i < r.offset + r.size; i++) {
        if (this.owner[i] === STANDARD) throw new RangeError(`${where} overlaps ${names[i]}`);
        this.owner[i] = REGISTER;
      }
    }
  }

  /** Reads `count` bytes at `offset` (range already checked). */
  read(device: Device, offset: number, count: number, log: Logger | undefined): MaybePromise<Uint8Array> {
    const out = device.config.read(offset, count);
    const parts = this.segments(offset, count);
    if (parts.length === 1 && parts[0].kind === STANDARD) return out;
    let pending: Promise<void> | undefined;
    for (const p of parts) {
      const at = p.start - offset;
      if (p.kind === UNCLAIMED) {
        unclaimed(device, log, 'read', p.start, out.subarray(at, at + p.length), count);
      } else if (p.kind === REGISTER) {
        const place = (bytes: Uint8Array): void => out.set(bytes, at);
        // Register reads run in address order, each after the one before.
        if (pending) pending = pending.then(() => this.registers!.read(p.start, p.length, device)).then(place);
        else {
          const r = this.registers!.read(p.start, p.length, device);
          if (r instanceof Promise) pending = r.then(place);
          else place(r);
        }
      }
    }
    return pending ? pending.then(() => out) : out;
  }

  /** Writes `data` at `offset` (range already checked), part by part in address order. */
  write(device: Device, offset: number, data: Uint8Array, log: Logger | undefined): MaybePromise<void> {
    const parts = this.segments(offset, data.length);
    if (parts.length === 1 && parts[0].kind === STANDARD) return device.config.write(offset, data);
    let pending: Promise<void> | undefined;
    for (const p of parts) {
      // A copy: later parts may run after an async register hook, when `data` is reused.
      const bytes = Buffer.from(data.subarray(p.start - offset, p.start - offset + p.length));
      const step = (): MaybePromise<void> => {
        if (p.kind === REGISTER) return this.registers!.write(p.start, bytes, device);
        if (p.kind === UNCLAIMED) unclaimed(device, log, 'write', p.start, bytes, data.length);
        device.config.write(p.start, bytes);
      };
      if (pending) pending = pending.then(step);
      else {
        const r = step();
        if (r instanceof Promise) pending = r;
      }
    }
    return pending;
  }

  /** Splits [offset, offset+count) into runs of bytes with the same owner. */
  private segments(offset: number, count: number): Segment[] {
    const parts: Segment[] = [];
    for (let i = offset; i < offset + count; ) {
      const kind = this.owner[i];
      let end = i + 1;
      while (end < offset + count && this.owner[end] === kind) end++;
      parts.push({ kind, start: i, length: end - i });
      i = end;
    }
    return parts;
  }
}

function range(offset: number, size: number): string {
  return `0x${offset.toString(16)}-0x${(offset + size - 1).toString(16)}`;
}

/**
 * An access to unclaimed bytes: counted as unmodeled (unless raw config
 * hooks may be serving them) and traced.
 */
function unclaimed(device: Device, log: Logger | undefined, op: 'read' | 'write', offset: number, bytes: Uint8Array, accessLength: number): void {
  if (!device.spec.config) device.unmodeled.note(CONFIG_REGION, offset, bytes.length, accessLength, op);
  if (!log) return;
  const shown = bytes.length <= 8 ? Buffer.from(bytes).reverse().toString('hex') : Buffer.from(bytes).toString('hex');
  const note = op === 'read' ? 'reads as zero' : 'ignored';
  log.debug(`config ${op} reg=0x${offset.toString(16)} name=unclaimed ${bytes.length <= 8 ? 'val' : 'data'}=0x${shown} (${note}: no header field, capability or config register)`);
}
