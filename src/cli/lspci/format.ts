/** Formats an {@link LspciSnapshot} like `lspci -vv`, and {@link LspciData} as JSON. Pure. */
import { PciCommand, PciStatus } from '../../pci/regs.js';
import { formatBar } from './bars.js';
import { describeCap, type CapText } from './caps.js';
import { decodeLspci } from './decode.js';
import { describeExtCap } from './extcaps.js';
import { className } from './names.js';
import type { LspciData, LspciSnapshot } from './types.js';
import { bitFlags, flag, hex } from './util.js';

const COMMAND_BITS = [
  ['I/O', PciCommand.IO],
  ['Mem', PciCommand.MEMORY],
  ['BusMaster', PciCommand.MASTER],
  ['SpecCycle', PciCommand.SPECIAL],
  ['MemWINV', PciCommand.INVALIDATE],
  ['VGASnoop', PciCommand.VGA_PALETTE],
  ['ParErr', PciCommand.PARITY],
  ['Stepping', PciCommand.WAIT],
  ['SERR', PciCommand.SERR],
  ['FastB2B', PciCommand.FAST_BACK],
  ['DisINTx', PciCommand.INTX_DISABLE],
] as const;

const DEVSEL = ['fast', 'medium', 'slow', '??'];

function titleLine(d: LspciData): string {
  const cls = d.classCode >>> 8;
  const progIf = d.classCode & 0xff;
  const rev = `(rev ${hex(d.revision, 2)})${progIf ? ` (prog-if ${hex(progIf, 2)})` : ''}`;
  return `00:00.0 ${className(d.classCode)} [${hex(cls, 4)}]: Device ${hex(d.vendorId, 4)}:${hex(d.deviceId, 4)} ${rev}`;
}

function statusLine(s: number): string {
  const first = bitFlags(s, [['Cap', PciStatus.CAP_LIST], ['66MHz', PciStatus.MHZ66], ['UDF', PciStatus.UDF], ['FastB2B', PciStatus.FAST_BACK], ['ParErr', PciStatus.PARITY]]);
  const devsel = `DEVSEL=${DEVSEL[(s & PciStatus.DEVSEL_MASK) >> 9]}`;
  const errors = bitFlags(s, [['>TAbort', PciStatus.SIG_TARGET_ABORT], ['<TAbort', PciStatus.REC_TARGET_ABORT], ['<MAbort', PciStatus.REC_MASTER_ABORT], ['>SERR', PciStatus.SIG_SYSTEM_ERROR], ['<PERR', PciStatus.DETECTED_PARITY]]);
  return `\tStatus: ${first} ${devsel} ${errors} ${flag('INTx', s & PciStatus.INTERRUPT)}`;
}

function interruptLine(d: LspciData): string[] {
  if (d.interruptPin === 0) return [];
  const pin = d.interruptPin <= 4 ? String.fromCharCode(0x40 + d.interruptPin) : `?${d.interruptPin}`;
  const routed = d.interruptLine !== 0 && d.interruptLine !== 0xff ? ` routed to IRQ ${d.interruptLine}` : '';
  return [`\tInterrupt: pin ${pin}${routed}`];
}

function headerLines(d: LspciData): string[] {
  return [
    titleLine(d),
    `\tSubsystem: Device ${hex(d.subsystemVendorId, 4)}:${hex(d.subsystemId, 4)}`,
    `\tControl: ${bitFlags(d.command, COMMAND_BITS)}`,
    statusLine(d.status),
    ...interruptLine(d),
  ];
}

function capLines(label: string, text: CapText): string[] {
  return [`\tCapabilities: [${label}] ${text.title}`, ...text.details.map((l) => `\t\t${l}`)];
}

/** The full `lspci -vv`-like text for one device, newline-terminated. */
export function formatLspci(s: LspciSnapshot): string {
  const d = decodeLspci(s);
  const lines = [
    ...headerLines(d),
    ...d.bars.map((b) => formatBar(b, d.command)),
    ...d.capabilities.flatMap((c) => capLines(hex(c.offset, 2), describeCap(s.config, c.offset))),
    ...d.extendedCapabilities.flatMap((c) => capLines(`${hex(c.offset, 3)} v${c.version}`, describeExtCap(s.config, c.offset))),
    ...d.notes.map((n) => `\tWarning: ${n}`),
    `\tvfio-user: ${d.numRegions} regions, ${d.numIrqs} IRQ types, ${d.configSize}-byte config space`,
  ];
  return `${lines.join('\n')}\n`;
}

/** {@link LspciData} as indented JSON (bigint addresses as hex strings), newline-terminated. */
export function formatLspciJson(d: LspciData): string {
  return `${JSON.stringify(d, (_k, v: unknown) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v), 2)}\n`;
}
