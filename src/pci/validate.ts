/** Validation of device descriptions; every problem is a PciConfigError. */

import { check } from './errors.js';
import { MSIX_MAX_VECTORS, MsixEntry, PCI_NUM_BARS, VendorCap, VsecCap } from './regs.js';
import type {
  BarDescription,
  CapabilityDescription,
  ConfigSpaceDescription,
  ExtendedCapabilityDescription,
  MsixCapabilityDescription,
  PciIdentity,
} from './types.js';

/** True when `v` is an integer in [min, max]. */
function inRange(v: unknown, min: number, max: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

/** Throws unless `v` is an integer in [min, max]. */
function checkRange(v: unknown, min: number, max: number, what: string): void {
  check(inRange(v, min, max), `${what} must be an integer in ${min}..${max}, got ${String(v)}`);
}

/** True when `n` is a positive power of two (exact for any safe integer). */
export function isPowerOfTwo(n: number): boolean {
  if (!Number.isSafeInteger(n) || n <= 0) return false;
  const b = BigInt(n);
  return (b & (b - 1n)) === 0n;
}

/** Checks the identity registers. */
export function validateIdentity(id: PciIdentity): void {
  checkRange(id.vendorId, 0, 0xfffe, 'identity.vendorId');
  checkRange(id.deviceId, 0, 0xffff, 'identity.deviceId');
  checkRange(id.subsystemVendorId ?? 0, 0, 0xffff, 'identity.subsystemVendorId');
  checkRange(id.subsystemId ?? 0, 0, 0xffff, 'identity.subsystemId');
  checkRange(id.classCode ?? 0, 0, 0xffffff, 'identity.classCode');
  checkRange(id.revision ?? 0, 0, 0xff, 'identity.revision');
}

/** Largest allowed size for a BAR of this kind. */
function maxBarSize(bar: BarDescription): number {
  if (bar.kind === 'io') return 0x10000;
  return bar.is64 ? 2 ** 52 : 2 ** 31;
}

/** Checks one BAR description. */
function validateBar(bar: BarDescription, i: number): void {
  check(bar.kind === 'memory' || bar.kind === 'io', `BAR${i}: kind must be 'memory' or 'io'`);
  check(isPowerOfTwo(bar.size), `BAR${i}: size ${bar.size} is not a power of two`);
  const min = bar.kind === 'io' ? 4 : 16;
  check(bar.size >= min, `BAR${i}: ${bar.kind} BAR size must be at least ${min}`);
  check(bar.size <= maxBarSize(bar), `BAR${i}: size ${bar.size} exceeds ${maxBarSize(bar)}`);
  check(!(bar.kind === 'io' && bar.is64), `BAR${i}: an I/O BAR cannot be 64-bit`);
  check(!(bar.kind === 'io' && bar.prefetchable), `BAR${i}: an I/O BAR cannot be prefetchable`);
}

/** Checks the BAR array, including 64-bit BARs claiming the next slot. */
export function validateBars(bars: readonly (BarDescription | undefined)[]): void {
  check(bars.length <= PCI_NUM_BARS, `at most ${PCI_NUM_BARS} BARs, got ${bars.length}`);
  bars.forEach((bar, i) => {
    if (bar === undefined) return;
    validateBar(bar, i);
    if (!bar.is64) return;
    check(i < PCI_NUM_BARS - 1, `BAR${i}: a 64-bit BAR cannot use the last slot`);
    check(bars[i + 1] === undefined, `BAR${i}: 64-bit BAR overlaps BAR${i + 1}, which is in use`);
  });
}

/** Checks that [offset, offset+len) lies within memory BAR `index`. */
function checkInBar(bars: readonly (BarDescription | undefined)[], index: number, offset: number, len: number, what: string): void {
  checkRange(index, 0, PCI_NUM_BARS - 1, `${what} BAR`);
  const bar = bars[index];
  check(bar !== undefined && bar.kind === 'memory', `${what} BAR${index} is not a memory BAR`);
  check(inRange(offset, 0, 0xfffffff8) && offset % 8 === 0, `${what} offset ${offset} must be 8-byte aligned`);
  check(offset + len <= bar.size, `${what} (offset ${offset}, ${len} bytes) does not fit in BAR${index} (${bar.size} bytes)`);
}

/** Size in bytes of an MSI-X pending bit array for `vectors` vectors. */
export function msixPbaSize(vectors: number): number {
  return Math.ceil(vectors / 64) * 8;
}

/** Checks the MSI-X table and PBA placement. */
function validateMsix(cap: MsixCapabilityDescription, bars: readonly (BarDescription | undefined)[]): void {
  checkRange(cap.vectors, 1, MSIX_MAX_VECTORS, 'MSI-X vectors');
  const tableSize = cap.vectors * MsixEntry.SIZE;
  const pbaSize = msixPbaSize(cap.vectors);
  checkInBar(bars, cap.tableBar, cap.tableOffset, tableSize, 'MSI-X table');
  checkInBar(bars, cap.pbaBar, cap.pbaOffset, pbaSize, 'MSI-X PBA');
  if (cap.tableBar !== cap.pbaBar) return;
  const disjoint = cap.tableOffset + tableSize <= cap.pbaOffset || cap.pbaOffset + pbaSize <= cap.tableOffset;
  check(disjoint, 'MSI-X table and PBA overlap');
}

/** Checks one standard capability. */
function validateCap(cap: CapabilityDescription, bars: readonly (BarDescription | undefined)[]): void {
  switch (cap.id) {
    case 'pm':
      return;
    case 'msi':
      check([1, 2, 4, 8, 16, 32].includes(cap.vectors), `MSI vectors must be 1, 2, 4, 8, 16 or 32, got ${cap.vectors}`);
      return;
    case 'msix':
      return validateMsix(cap, bars);
    case 'pcie':
      check(['endpoint', 'rc-endpoint', 'legacy-endpoint', undefined].includes(cap.type), `unknown PCIe type ${String(cap.type)}`);
      return;
    case 'vendor':
      check(cap.data instanceof Uint8Array, 'vendor capability data must be a Uint8Array');
      check(VendorCap.DATA + cap.data.length <= VendorCap.MAX_SIZE, `vendor capability data too long (${cap.data.length} bytes)`);
      return;
    default:
      check(false, `unknown capability id ${String((cap as { id: unknown }).id)} (known: 'pm', 'msi', 'msix', 'pcie', 'vendor')`);
  }
}

/** Checks one extended capability. */
function validateExtCap(cap: ExtendedCapabilityDescription): void {
  switch (cap.id) {
    case 'dsn':
      check(typeof cap.serial === 'bigint' && cap.serial >= 0n && cap.serial < 1n << 64n, 'DSN serial must be a 64-bit unsigned bigint');
      return;
    case 'vendor':
      checkRange(cap.vsecId, 0, 0xffff, 'VSEC id');
      checkRange(cap.revision, 0, 0xf, 'VSEC revision');
      check(cap.data instanceof Uint8Array, 'VSEC data must be a Uint8Array');
      check(VsecCap.DATA + cap.data.length <= VsecCap.MAX_SIZE, `VSEC data too long (${cap.data.length} bytes)`);
      return;
    default:
      check(false, `unknown extended capability id ${String((cap as { id: unknown }).id)} (known: 'dsn', 'vendor')`);
  }
}

/** Throws when a capability kind that may appear once appears twice. */
function checkUnique(ids: readonly string[], unique: readonly string[], chain: string): void {
  for (const id of unique) {
    check(ids.filter((x) => x === id).length <= 1, `${chain} capability '${id}' given more than once`);
  }
}

/**
 * Validates a whole description (layout fit is checked by the builder).
 * @throws PciConfigError describing the first problem found.
 */
export function validateDescription(desc: ConfigSpaceDescription): void {
  validateIdentity(desc.identity);
  const bars = desc.bars ?? [];
  validateBars(bars);
  const caps = desc.capabilities ?? [];
  caps.forEach((c) => validateCap(c, bars));
  checkUnique(caps.map((c) => c.id), ['pm', 'msi', 'msix', 'pcie'], 'standard');
  const ext = desc.extendedCapabilities ?? [];
  ext.forEach(validateExtCap);
  checkUnique(ext.map((c) => c.id), ['dsn'], 'extended');
  const pcie = caps.some((c) => c.id === 'pcie');
  check(ext.length === 0 || pcie, 'extended capabilities need a PCIe capability (4096-byte config space)');
  checkRange(desc.interruptPin ?? 0, 0, 4, 'interruptPin');
}
