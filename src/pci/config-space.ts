/** The PCI configuration space of one function: header, BARs, capabilities. */

import { checkAccess } from './access.js';
import { buildCapabilities, type CapabilityLayout } from './capabilities.js';
import { EIO, check } from './errors.js';
import { buildHeader } from './header.js';
import { ConfigImage } from './image.js';
import { MsiFunction, type MsiMessage } from './msi.js';
import { MsixTable } from './msix.js';
import { MsixCap, PCIE_CONFIG_SIZE, PCI_CONFIG_SIZE, PCI_NUM_BARS, PciCommand, PciHeader, PciStatus, PcieCap, PmCap, barOffset } from './regs.js';
import type {
  BarDescription,
  CapabilityInfo,
  ConfigEvent,
  ConfigHooks,
  ConfigListener,
  ConfigSpaceDescription,
  MsiState,
  MsixLayout,
} from './types.js';
import { validateDescription } from './validate.js';

/** Snapshot format marker ("MPCI") and version. */
const SNAPSHOT_MAGIC = 0x4d504349;
const SNAPSHOT_VERSION = 1;
/** magic u32, version u8, flags u8, size u16. */
const SNAPSHOT_HEADER = 8;

/** State compared before and after an access to derive events. */
interface Watched {
  command: number;
  bars: (bigint | undefined)[];
  msiEnabled: boolean;
  msiVectors: number;
  msiMask: number;
  msixEnabled: boolean;
  msixMask: boolean;
  power: number;
}

/**
 * A pure model of a type 0 config space (256 bytes, or 4096 with PCIe).
 * Accesses of any size and alignment apply byte by byte through per-byte
 * write masks; read-only bits ignore writes, RW1C bits clear on one.
 * Changes the server must act on are reported through onChange().
 */
export class ConfigSpace {
  /** Config space size: 4096 when the function has a PCIe capability. */
  readonly size: 256 | 4096;
  /** Every placed capability, standard chain first, in chain order. */
  readonly capabilities: readonly CapabilityInfo[];
  /** The six BAR slots (the upper half of a 64-bit BAR is undefined). */
  readonly bars: readonly (BarDescription | undefined)[];
  /** The MSI-X table, when the function has an MSI-X capability. */
  readonly msix: MsixTable | undefined;
  /** Where the MSI-X table and PBA live, when present. */
  readonly msixLayout: MsixLayout | undefined;
  private readonly img: ConfigImage;
  private readonly initial: ConfigImage;
  private readonly layout: CapabilityLayout;
  private readonly msi: MsiFunction | undefined;
  private readonly hooks: ConfigHooks;
  private readonly listeners = new Set<ConfigListener>();
  private intx = false;

  /**
   * Builds the config space of a described function.
   * @throws PciConfigError when the description is invalid or does not fit.
   */
  constructor(desc: ConfigSpaceDescription) {
    validateDescription(desc);
    const pcie = (desc.capabilities ?? []).some((c) => c.id === 'pcie');
    this.size = pcie ? PCIE_CONFIG_SIZE : PCI_CONFIG_SIZE;
    this.bars = Object.freeze(Array.from({ length: PCI_NUM_BARS }, (_, i) => copyBar(desc.bars?.[i])));
    this.img = new ConfigImage(this.size);
    buildHeader(this.img, desc.identity, this.bars, desc.interruptPin ?? 0);
    this.layout = buildCapabilities(this.img, desc.capabilities ?? [], desc.extendedCapabilities ?? []);
    this.initial = this.img.clone();
    this.capabilities = Object.freeze(this.layout.caps);
    this.msi = this.layout.msi && new MsiFunction(this.img, this.layout.msi);
    this.msixLayout = this.layout.msix && withoutOffset(this.layout.msix);
    this.msix = this.layout.msix && new MsixTable(this.layout.msix.vectors);
    this.hooks = desc.hooks ?? {};
  }

  /** Subscribes to config events; returns an unsubscribe function. Listeners run synchronously. */
  onChange(listener: ConfigListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Reads `length` bytes at `offset` (any alignment); hooks.read may override.
   * @throws PciConfigError (errno 22) when out of range.
   */
  read(offset: number, length: number): Buffer {
    checkAccess(offset, length, this.size, 'config space');
    const out = Buffer.from(this.img.data.subarray(offset, offset + length));
    const hooked = this.hooks.read?.(offset, length);
    if (hooked === undefined) return out;
    check(hooked.length === length, `config read hook returned ${hooked.length} bytes, expected ${length}`, EIO);
    return Buffer.from(hooked);
  }

  /**
   * Writes `data` at `offset` (any alignment), each byte through its write
   * mask, unless hooks.write consumes it; then reports resulting events.
   * @throws PciConfigError (errno 22) when out of range.
   */
  write(offset: number, data: Uint8Array): void {
    checkAccess(offset, data.length, this.size, 'config space');
    if (data.length === 0) return;
    const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
    if (this.hooks.write?.(offset, buf) === true) return;
    const before = this.watch();
    buf.forEach((b, i) => this.img.writeByte(offset + i, b));
    this.fixPowerState(before.power);
    const flr = this.takeFlr();
    this.settle(before);
    if (flr) this.functionLevelReset();
  }

  /** Finds the first capability with this description id in a chain. */
  findCapability(id: CapabilityInfo['id'], chain: CapabilityInfo['chain'] = 'standard'): CapabilityInfo | undefined {
    return this.capabilities.find((c) => c.id === id && c.chain === chain);
  }

  /** The command register. */
  get command(): number {
    return this.img.u16(PciHeader.COMMAND);
  }

  /** Command bit 10: INTx must not be asserted. */
  get intxDisabled(): boolean {
    return (this.command & PciCommand.INTX_DISABLE) !== 0;
  }

  /** The model's INTx condition (mirrored in status bit 3). */
  get intxPending(): boolean {
    return this.intx;
  }

  /** Sets the INTx condition; the server asserts INTx when pending and not intxDisabled. */
  setIntxPending(pending: boolean): void {
    this.intx = pending;
    const status = this.img.u16(PciHeader.STATUS) & ~PciStatus.INTERRUPT;
    this.img.setU16(PciHeader.STATUS, status | (pending ? PciStatus.INTERRUPT : 0));
  }

  /**
   * Sets error bits of the status register (only PciStatus.RW1C bits, e.g.
   * REC_MASTER_ABORT); software clears them by writing one.
   */
  setStatusError(bits: number): void {
    const status = this.img.u16(PciHeader.STATUS);
    this.img.setU16(PciHeader.STATUS, status | (bits & PciStatus.RW1C));
  }

  /** Whether MSI-X is enabled (false without an MSI-X capability). */
  get msixEnabled(): boolean {
    return this.msixControl().enabled;
  }

  /** Whether the MSI-X function mask is set. */
  get msixFunctionMasked(): boolean {
    return this.msixControl().functionMask;
  }

  /** MSI register state, or undefined without an MSI capability. */
  msiState(): MsiState | undefined {
    return this.msi?.state();
  }

  /**
   * Sets or clears MSI `vector`'s pending bit, which the guest reads; a
   * no-op without MSI or per-vector masking.
   * @throws PciConfigError (errno 22) for a vector beyond the capable count.
   */
  setMsiPending(vector: number, pending: boolean): void {
    this.msi?.setPending(vector, pending);
  }

  /** The MSI message (address, data with vector bits) for `vector`. */
  msiMessage(vector: number): MsiMessage | undefined {
    return this.msi?.message(vector);
  }

  /** Address programmed in BAR `index` (type bits removed), or undefined if not implemented. */
  barAddress(index: number): bigint | undefined {
    const bar = this.bars[index];
    if (bar === undefined) return undefined;
    const typeMask = bar.kind === 'io' ? 0x3 : 0xf;
    const lo = BigInt((this.img.u32(barOffset(index)) & ~typeMask) >>> 0);
    const hi = bar.is64 ? BigInt(this.img.u32(barOffset(index + 1))) : 0n;
    return (hi << 32n) | lo;
  }

  /** PCI PM power state (0 = D0, 3 = D3hot); 0 without a PM capability. */
  get powerState(): number {
    const pm = this.layout.pm;
    return pm ? this.img.u16(pm.offset + PmCap.PMCSR) & PmCap.PMCSR_STATE_MASK : 0;
  }

  /** Back to power-on state; reports the resulting changes as events. */
  reset(): void {
    const before = this.watch();
    this.initial.data.copy(this.img.data);
    this.intx = false;
    this.msix?.reset();
    this.settle(before);
  }

  /** Serializes the whole mutable state (config bytes, INTx, MSI-X table). */
  snapshot(): Buffer {
    const msix = this.msix?.snapshot() ?? Buffer.alloc(0);
    const head = Buffer.alloc(SNAPSHOT_HEADER);
    head.writeUInt32BE(SNAPSHOT_MAGIC, 0);
    head.writeUInt8(SNAPSHOT_VERSION, 4);
    head.writeUInt8(this.intx ? 1 : 0, 5);
    head.writeUInt16LE(this.size, 6);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(msix.length);
    return Buffer.concat([head, this.img.data, len, msix]);
  }

  /**
   * Restores a snapshot() of an identical device; reports changes as events.
   * @throws PciConfigError when the snapshot is malformed or from another device layout.
   */
  restore(buf: Uint8Array): void {
    const snap = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
    const config = this.checkSnapshot(snap);
    const before = this.watch();
    this.msix?.restore(snap.subarray(SNAPSHOT_HEADER + this.size + 4));
    config.copy(this.img.data);
    this.intx = (snap[5]! & 1) !== 0;
    this.settle(before);
  }

  /** Validates a snapshot's framing and compatibility; returns its config bytes. */
  private checkSnapshot(snap: Buffer): Buffer {
    const fixed = SNAPSHOT_HEADER + this.size + 4;
    check(snap.length >= SNAPSHOT_HEADER && snap.readUInt32BE(0) === SNAPSHOT_MAGIC && snap[4] === SNAPSHOT_VERSION, 'not a config space snapshot of a known version');
    check(snap.readUInt16LE(6) === this.size, `snapshot is of a ${snap.readUInt16LE(6)}-byte config space, this one is ${this.size}`);
    check(snap.length >= fixed, `snapshot too short (${snap.length} bytes)`);
    check(snap.length === fixed + snap.readUInt32LE(SNAPSHOT_HEADER + this.size), 'snapshot length does not match its MSI-X part');
    const config = snap.subarray(SNAPSHOT_HEADER, SNAPSHOT_HEADER + this.size);
    const bad = this.firstIncompatibleByte(config);
    check(bad < 0, `snapshot is from a different device (read-only byte 0x${bad.toString(16)} differs)`);
    check(this.msix !== undefined || snap.length === fixed, 'snapshot has MSI-X state but this device has no MSI-X');
    return config;
  }

  /** Offset of the first constant byte where `config` differs from this device, or -1. */
  private firstIncompatibleByte(config: Buffer): number {
    const i = this.initial;
    for (let off = 0; off < this.size; off++) {
      const fixed = ~(i.wmask[off]! | i.w1c[off]! | i.dyn[off]!) & 0xff;
      if ((config[off]! & fixed) !== (i.data[off]! & fixed)) return off;
    }
    return -1;
  }

  /** Syncs MSI-X control into the table and emits events for what changed since `before`. */
  private settle(before: Watched): void {
    const after = this.watch();
    const { enabled, functionMask } = this.msixControl();
    this.msix?.setControl(enabled, functionMask);
    this.emitDiff(before, after);
  }

  /** Emits one event per changed field. */
  private emitDiff(a: Watched, b: Watched): void {
    if (a.command !== b.command) this.emit({ type: 'command', value: b.command, previous: a.command });
    b.bars.forEach((addr, index) => {
      if (addr !== undefined && addr !== a.bars[index]) this.emit({ type: 'bar', index, address: addr });
    });
    if (a.msiEnabled !== b.msiEnabled || a.msiVectors !== b.msiVectors) {
      this.emit({ type: 'msi', enabled: b.msiEnabled, vectors: b.msiVectors });
    }
    if (a.msiMask !== b.msiMask) this.emit({ type: 'msi-mask', mask: b.msiMask });
    if (a.msixEnabled !== b.msixEnabled || a.msixMask !== b.msixMask) {
      this.emit({ type: 'msix', enabled: b.msixEnabled, functionMask: b.msixMask });
    }
    if (a.power !== b.power) this.emit({ type: 'power', state: b.power });
  }

  /** Captures the watched state. */
  private watch(): Watched {
    const msix = this.msixControl();
    return {
      command: this.command,
      bars: this.bars.map((_, i) => this.barAddress(i)),
      msiEnabled: this.msi?.enabled ?? false,
      msiVectors: this.msi?.enabled ? this.msi.vectors : 0,
      msiMask: this.msi?.state().mask ?? 0,
      msixEnabled: msix.enabled,
      msixMask: msix.functionMask,
      power: this.powerState,
    };
  }

  /** MSI-X control bits from config space. */
  private msixControl(): { enabled: boolean; functionMask: boolean } {
    const cap = this.layout.msix;
    if (!cap) return { enabled: false, functionMask: false };
    const flags = this.img.u16(cap.offset + MsixCap.FLAGS);
    return { enabled: (flags & MsixCap.FLAGS_ENABLE) !== 0, functionMask: (flags & MsixCap.FLAGS_MASKALL) !== 0 };
  }

  /** D1 and D2 are not supported: a write selecting them leaves the state unchanged. */
  private fixPowerState(previous: number): void {
    const pm = this.layout.pm;
    const state = this.powerState;
    if (!pm || (state !== 1 && state !== 2)) return;
    const off = pm.offset + PmCap.PMCSR;
    this.img.setU16(off, (this.img.u16(off) & ~PmCap.PMCSR_STATE_MASK) | previous);
  }

  /** Clears a just-written Initiate FLR bit; true when it was set. */
  private takeFlr(): boolean {
    const pcie = this.layout.pcie;
    if (!pcie?.flr) return false;
    const off = pcie.offset + PcieCap.DEVCTL;
    const v = this.img.u16(off);
    if ((v & PcieCap.DEVCTL_BCR_FLR) === 0) return false;
    this.img.setU16(off, v & ~PcieCap.DEVCTL_BCR_FLR);
    return true;
  }

  /** Function Level Reset: config state back to power-on, then an `flr` event for the device. */
  private functionLevelReset(): void {
    this.reset();
    this.emit({ type: 'flr' });
  }

  /** Delivers an event to every listener. */
  private emit(event: ConfigEvent): void {
    for (const l of this.listeners) l(event);
  }
}

/** A frozen copy of a BAR description (undefined stays undefined). */
function copyBar(bar: BarDescription | undefined): BarDescription | undefined {
  return bar === undefined ? undefined : Object.freeze({ ...bar });
}

/** The MSI-X layout without the capability offset. */
function withoutOffset(l: MsixLayout & { offset: number }): MsixLayout {
  const { offset: _offset, ...rest } = l;
  return Object.freeze(rest);
}
