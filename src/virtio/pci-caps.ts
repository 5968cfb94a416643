/**
 * The virtio-pci vendor capabilities (virtio 1.2, 4.1.4) and the one that
 * needs behaviour: the PCI configuration access capability, a window
 * through which firmware reads and writes the BAR via config space.
 */
import type { CapabilityDescription, ConfigHooks } from '../pci/index.js';
import { VirtioPciCapType } from './constants.js';
import { PCI_CAP_HEADER, VIRTIO_PCI_CAP } from './layouts.js';

/** Where each area lives in the virtio BAR. */
export interface VirtioBarLayout {
  bar: number;
  common: { offset: number; length: number };
  isr: { offset: number; length: number };
  device: { offset: number; length: number } | undefined;
  notify: { offset: number; length: number; multiplier: number };
}

/** Bytes of a virtio_pci_cap after the PCI capability header, with `extra` zero bytes after it. */
function capData(cfgType: number, bar: number, offset: number, length: number, extra = 0): Buffer {
  const b = Buffer.alloc(VIRTIO_PCI_CAP.size + extra);
  VIRTIO_PCI_CAP.write(b, 0, { cfgType, bar, id: 0, offset, length });
  return b;
}

/** The vendor capabilities, PCI config access last. */
export function virtioCapabilities(l: VirtioBarLayout): CapabilityDescription[] {
  const notify = capData(VirtioPciCapType.NOTIFY, l.bar, l.notify.offset, l.notify.length, 4);
  notify.writeUInt32LE(l.notify.multiplier, VIRTIO_PCI_CAP.size); // notify_off_multiplier
  const caps: CapabilityDescription[] = [
    { id: 'vendor', data: capData(VirtioPciCapType.COMMON, l.bar, l.common.offset, l.common.length) },
    { id: 'vendor', data: notify },
    { id: 'vendor', data: capData(VirtioPciCapType.ISR, l.bar, l.isr.offset, l.isr.length) },
  ];
  if (l.device) caps.push({ id: 'vendor', data: capData(VirtioPciCapType.DEVICE, l.bar, l.device.offset, l.device.length) });
  // bar, offset and length are written by the driver; 4 bytes of pci_cfg_data follow.
  caps.push({ id: 'vendor', data: capData(VirtioPciCapType.PCI_CFG, 0, 0, 0, 4) });
  return caps;
}

/** BAR access the PCI config window forwards to. */
export interface BarAccess {
  read(bar: number, offset: number, length: number): Buffer;
  write(bar: number, offset: number, data: Buffer): void;
}

// Offsets inside the PCI config access capability (from its PCI header): the driver-written
// bar, offset and length, then the 4 bytes of pci_cfg_data.
const CAP_BAR = PCI_CAP_HEADER + VIRTIO_PCI_CAP.offsets.bar;
const CAP_OFFSET = PCI_CAP_HEADER + VIRTIO_PCI_CAP.offsets.offset;
const CAP_LENGTH = PCI_CAP_HEADER + VIRTIO_PCI_CAP.offsets.length;
const CAP_DATA = PCI_CAP_HEADER + VIRTIO_PCI_CAP.size;
const CAP_END = CAP_DATA + 4;

/**
 * Config hooks serving the PCI configuration access capability at
 * `locate()` (its config-space offset, known once the device is built).
 * `standard` reads config space without these hooks.
 */
export function pciCfgWindow(locate: () => number | undefined, bars: BarAccess, standard: (offset: number, length: number) => Buffer | undefined): ConfigHooks {
  // The driver-written part: bar (byte 4), offset (8..11), length (12..15).
  const shadow = Buffer.alloc(CAP_DATA);
  const window = (): { bar: number; offset: number; length: number } => ({
    bar: shadow[CAP_BAR],
    offset: shadow.readUInt32LE(CAP_OFFSET),
    length: shadow.readUInt32LE(CAP_LENGTH),
  });
  let reading = false;
  return {
    read(offset, length) {
      const cap = locate();
      if (cap === undefined || reading || offset + length <= cap + CAP_BAR || offset >= cap + CAP_END) return undefined;
      reading = true;
      let out: Buffer | undefined;
      try {
        out = standard(offset, length);
      } finally {
        reading = false;
      }
      if (!out) return undefined;
      const w = window();
      const data = offset + length > cap + CAP_DATA && offset < cap + CAP_END && validWindow(w) ? bars.read(w.bar, w.offset, w.length) : Buffer.alloc(4);
      for (let i = 0; i < length; i++) {
        const at = offset + i - cap;
        if (at === CAP_BAR || (at >= CAP_OFFSET && at < CAP_DATA)) out[i] = shadow[at];
        else if (at >= CAP_DATA && at < CAP_END) out[i] = data[at - CAP_DATA] ?? 0;
      }
      return out;
    },
    write(offset, data) {
      const cap = locate();
      if (cap === undefined || offset + data.length <= cap + CAP_BAR || offset >= cap + CAP_END) return false;
      for (let i = 0; i < data.length; i++) {
        const at = offset + i - cap;
        if (at === CAP_BAR || (at >= CAP_OFFSET && at < CAP_DATA)) shadow[at] = data[i];
      }
      const w = window();
      if (offset === cap + CAP_DATA && data.length >= w.length && validWindow(w)) bars.write(w.bar, w.offset, data.subarray(0, w.length));
      return offset >= cap + CAP_BAR && offset + data.length <= cap + CAP_END;
    },
  };
}

function validWindow(w: { offset: number; length: number }): boolean {
  return (w.length === 1 || w.length === 2 || w.length === 4) && w.offset % w.length === 0;
}
