/**
 * Names for class codes and capability ids (from the PCI Code and ID
 * Assignment specification). Vendor and device names are not looked up.
 */
import { hex } from './util.js';

const BASE_CLASSES: Record<number, string> = {
  0x00: 'Unclassified device',
  0x01: 'Mass storage controller',
  0x02: 'Network controller',
  0x03: 'Display controller',
  0x04: 'Multimedia controller',
  0x05: 'Memory controller',
  0x06: 'Bridge',
  0x07: 'Communication controller',
  0x08: 'Generic system peripheral',
  0x09: 'Input device controller',
  0x0a: 'Docking station',
  0x0b: 'Processor',
  0x0c: 'Serial bus controller',
  0x0d: 'Wireless controller',
  0x0e: 'Intelligent controller',
  0x0f: 'Satellite communications controller',
  0x10: 'Encryption controller',
  0x11: 'Signal processing controller',
  0x12: 'Processing accelerators',
  0x13: 'Non-Essential Instrumentation',
  0x40: 'Coprocessor',
  0xff: 'Unassigned class',
};

/** Common sub-classes, keyed by base class << 8 | sub-class. */
const SUB_CLASSES: Record<number, string> = {
  0x0000: 'Non-VGA unclassified device',
  0x0001: 'VGA compatible unclassified device',
  0x0100: 'SCSI storage controller',
  0x0101: 'IDE interface',
  0x0104: 'RAID bus controller',
  0x0106: 'SATA controller',
  0x0107: 'Serial Attached SCSI controller',
  0x0108: 'Non-Volatile memory controller',
  0x0200: 'Ethernet controller',
  0x0280: 'Network controller',
  0x0300: 'VGA compatible controller',
  0x0302: '3D controller',
  0x0380: 'Display controller',
  0x0401: 'Multimedia audio controller',
  0x0403: 'Audio device',
  0x0500: 'RAM memory',
  0x0600: 'Host bridge',
  0x0601: 'ISA bridge',
  0x0604: 'PCI bridge',
  0x0680: 'Bridge',
  0x0700: 'Serial controller',
  0x0780: 'Communication controller',
  0x0880: 'System peripheral',
  0x0c03: 'USB controller',
  0x0c05: 'SMBus',
  0x1000: 'Network and computing encryption device',
  0x1200: 'Processing accelerators',
};

/** The class name lspci would print for a 24-bit class code. */
export function className(classCode: number): string {
  const cls = (classCode >>> 8) & 0xffff;
  return SUB_CLASSES[cls] ?? BASE_CLASSES[cls >>> 8] ?? `Class ${hex(cls, 4)}`;
}

const CAP_NAMES: Record<number, string> = {
  0x01: 'Power Management',
  0x02: 'AGP',
  0x03: 'Vital Product Data',
  0x04: 'Slot Identification',
  0x05: 'MSI',
  0x06: 'CompactPCI hot-swap',
  0x07: 'PCI-X',
  0x08: 'HyperTransport',
  0x09: 'Vendor Specific Information',
  0x0a: 'Debug port',
  0x0b: 'CompactPCI central resource control',
  0x0c: 'PCI Hot-plug',
  0x0d: 'Subsystem',
  0x0e: 'AGP3',
  0x0f: 'Secure device',
  0x10: 'Express',
  0x11: 'MSI-X',
  0x12: 'SATA HBA',
  0x13: 'PCI Advanced Features',
  0x14: 'Enhanced Allocation',
  0x15: 'Flattening Portal Bridge',
};

/** Name of a standard capability id. */
export function capName(id: number): string {
  return CAP_NAMES[id] ?? `Unknown capability ${hex(id, 2)}`;
}

const EXT_CAP_NAMES: Record<number, string> = {
  0x0000: 'Null',
  0x0001: 'Advanced Error Reporting',
  0x0002: 'Virtual Channel',
  0x0003: 'Device Serial Number',
  0x0004: 'Power Budgeting',
  0x0005: 'Root Complex Link',
  0x0006: 'Root Complex Internal Link Control',
  0x0007: 'Root Complex Event Collector',
  0x0008: 'Multi-Function Virtual Channel',
  0x0009: 'Virtual Channel',
  0x000a: 'Root Complex Register Block',
  0x000b: 'Vendor Specific Information',
  0x000c: 'Config Access Correlation',
  0x000d: 'Access Control Services',
  0x000e: 'Alternative Routing-ID Interpretation (ARI)',
  0x000f: 'Address Translation Service (ATS)',
  0x0010: 'Single Root I/O Virtualization (SR-IOV)',
  0x0011: 'Multi-Root I/O Virtualization (MR-IOV)',
  0x0012: 'Multicast',
  0x0013: 'Page Request Interface (PRI)',
  0x0015: 'Resizable BAR',
  0x0016: 'Dynamic Power Allocation',
  0x0017: 'TPH Requester',
  0x0018: 'Latency Tolerance Reporting',
  0x0019: 'Secondary PCI Express',
  0x001b: 'Process Address Space ID (PASID)',
  0x001d: 'Downstream Port Containment',
  0x001e: 'L1 PM Substates',
  0x001f: 'Precision Time Measurement',
  0x0023: 'Designated Vendor-Specific',
  0x0025: 'Data Link Feature',
  0x0026: 'Physical Layer 16.0 GT/s',
};

/** Name of an extended capability id. */
export function extCapName(id: number): string {
  return EXT_CAP_NAMES[id] ?? `Unknown extended capability ${hex(id, 4)}`;
}

const PCIE_TYPES: Record<number, string> = {
  0x0: 'Endpoint',
  0x1: 'Legacy Endpoint',
  0x4: 'Root Port',
  0x5: 'Upstream Port',
  0x6: 'Downstream Port',
  0x7: 'PCI-Express to PCI/PCI-X Bridge',
  0x8: 'PCI/PCI-X to PCI-Express Bridge',
  0x9: 'Root Complex Integrated Endpoint',
  0xa: 'Root Complex Event Collector',
};

/** Name of a PCI Express device/port type. */
export function pcieTypeName(type: number): string {
  return PCIE_TYPES[type] ?? `Unknown type ${type}`;
}

const LINK_SPEEDS = ['unknown', '2.5GT/s', '5GT/s', '8GT/s', '16GT/s', '32GT/s', '64GT/s'];

/** A link speed field (LnkCap / LnkSta encoding). */
export function linkSpeed(code: number): string {
  return LINK_SPEEDS[code] ?? 'unknown';
}
