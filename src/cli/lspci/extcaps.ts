/** Describes extended capabilities (offset 0x100 and up). Pure functions. */
import { DsnCap, PCIE_CONFIG_SIZE, PciExtCapId, VsecCap } from '../../pci/regs.js';
import type { CapText } from './caps.js';
import { extCapName } from './names.js';
import { fits, hex } from './util.js';

function describeDsn(c: Buffer, o: number): CapText {
  if (!fits(o, DsnCap.SIZE, PCIE_CONFIG_SIZE)) return { title: 'Device Serial Number <truncated>', details: [] };
  const bytes = [...c.subarray(o + DsnCap.SERIAL_LO, o + DsnCap.SIZE)].reverse();
  return { title: `Device Serial Number ${bytes.map((b) => hex(b, 2)).join('-')}`, details: [] };
}

function describeVsec(c: Buffer, o: number): CapText {
  if (!fits(o, VsecCap.DATA, PCIE_CONFIG_SIZE)) return { title: 'Vendor Specific Information <truncated>', details: [] };
  const h = c.readUInt32LE(o + VsecCap.HEADER);
  const len = h >>> VsecCap.LEN_SHIFT;
  const bad = len < VsecCap.DATA || !fits(o, len, PCIE_CONFIG_SIZE) ? ' <bad length>' : '';
  return { title: `Vendor Specific Information: ID=${hex(h & 0xffff, 4)} Rev=${(h >>> VsecCap.REV_SHIFT) & 15} Len=${hex(len, 3)}${bad}`, details: [] };
}

/** Describes the extended capability with header at `offset`. */
export function describeExtCap(config: Buffer, offset: number): CapText {
  const id = config.readUInt32LE(offset) & 0xffff;
  if (id === PciExtCapId.DSN) return describeDsn(config, offset);
  if (id === PciExtCapId.VENDOR) return describeVsec(config, offset);
  return { title: extCapName(id), details: [] };
}
