/**
 * PCI configuration space model: a pure (no I/O) description-driven model of
 * a function's config space, capability chains and MSI-X table.
 */

export { EINVAL, EIO, PciConfigError } from './errors.js';
export * from './regs.js';
export type * from './types.js';
export { ConfigSpace } from './config-space.js';
export { MsixTable, type MsixEntryState } from './msix.js';
export { MsiFunction, type MsiMessage } from './msi.js';
export { ConfigImage } from './image.js';
export { buildCapabilities, capabilitySize, extendedCapabilitySize, type CapabilityLayout, type MsiLayout } from './capabilities.js';
export { barAddressMask, barTypeBits, buildHeader } from './header.js';
export { isPowerOfTwo, msixPbaSize, validateDescription } from './validate.js';
