/** The type 0 configuration header and its base address registers. */

import type { ConfigImage } from './image.js';
import { PciBar, PciCommand, PciHeader, PciHeaderType, PciStatus, barOffset } from './regs.js';
import type { BarDescription, PciIdentity } from './types.js';

/** Read-only type bits of a BAR's low dword. */
export function barTypeBits(bar: BarDescription): number {
  if (bar.kind === 'io') return PciBar.SPACE_IO;
  const type = bar.is64 ? PciBar.MEM_TYPE_64 : PciBar.MEM_TYPE_32;
  return type | (bar.prefetchable ? PciBar.MEM_PREFETCH : 0);
}

/** Writable address bits of a BAR as a 64-bit mask (upper half 0 for 32-bit BARs). */
export function barAddressMask(bar: BarDescription): bigint {
  const width = bar.is64 ? 64n : 32n;
  const all = (1n << width) - 1n;
  const low = bar.kind === 'io' ? BigInt(PciBar.IO_MASK) : BigInt(PciBar.MEM_MASK);
  return ~(BigInt(bar.size) - 1n) & all & (low | (0xffffffffn << 32n));
}

/** Defines BAR `index` (and its upper half for a 64-bit BAR). */
function defineBar(img: ConfigImage, index: number, bar: BarDescription): void {
  const mask = barAddressMask(bar);
  img.define(barOffset(index), 4, barTypeBits(bar), Number(mask & 0xffffffffn));
  if (bar.is64) img.define(barOffset(index + 1), 4, 0, Number(mask >> 32n));
}

/** Writes the identity registers. */
function defineIdentity(img: ConfigImage, id: PciIdentity): void {
  img.define(PciHeader.VENDOR_ID, 2, id.vendorId);
  img.define(PciHeader.DEVICE_ID, 2, id.deviceId);
  img.define(PciHeader.REVISION_ID, 1, id.revision ?? 0);
  const cls = id.classCode ?? 0;
  img.define(PciHeader.CLASS_PROG, 1, cls & 0xff);
  img.define(PciHeader.CLASS_DEVICE, 2, cls >>> 8);
  img.define(PciHeader.SUBSYSTEM_VENDOR_ID, 2, id.subsystemVendorId ?? 0);
  img.define(PciHeader.SUBSYSTEM_ID, 2, id.subsystemId ?? 0);
}

/**
 * Writes the type 0 header: identity, command/status masks, BARs, interrupt
 * registers. The capability pointer is filled in by the capability builder.
 */
export function buildHeader(img: ConfigImage, id: PciIdentity, bars: readonly (BarDescription | undefined)[], interruptPin: number): void {
  defineIdentity(img, id);
  img.define(PciHeader.COMMAND, 2, 0, PciCommand.WRITABLE);
  img.define(PciHeader.STATUS, 2, 0, 0, PciStatus.RW1C, PciStatus.INTERRUPT);
  img.define(PciHeader.CACHE_LINE_SIZE, 1, 0, 0xff);
  img.define(PciHeader.LATENCY_TIMER, 1, 0, 0xff);
  img.define(PciHeader.HEADER_TYPE, 1, PciHeaderType.NORMAL);
  bars.forEach((bar, i) => {
    if (bar !== undefined) defineBar(img, i, bar);
  });
  img.define(PciHeader.INTERRUPT_LINE, 1, 0, 0xff);
  img.define(PciHeader.INTERRUPT_PIN, 1, interruptPin);
}
