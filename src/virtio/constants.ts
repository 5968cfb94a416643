/**
 * Numbers from the virtio 1.2 specification: device status bits, feature
 * bits, the virtio-pci capability types and common configuration layout,
 * and split virtqueue flags. Facts only; no behaviour.
 */

/** Device status bits (2.1). */
export const VirtioStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;

/** Transport and ring feature bits (6), as bit numbers. */
export const VirtioFeature = {
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
} as const;

/** The feature mask of bit `n`. */
export function featureBit(n: number): bigint {
  return 1n << BigInt(n);
}

/** True when `features` has bit `n`. */
export function hasFeature(features: bigint, n: number): boolean {
  return (features & featureBit(n)) !== 0n;
}

/** virtio_pci_cap cfg_type values (4.1.4). */
export const VirtioPciCapType = {
  COMMON: 1,
  NOTIFY: 2,
  ISR: 3,
  DEVICE: 4,
  PCI_CFG: 5,
} as const;

/** Offsets in struct virtio_pci_common_cfg (4.1.4.3). */
export const CommonCfg = {
  DEVICE_FEATURE_SELECT: 0x00,
  DEVICE_FEATURE: 0x04,
  DRIVER_FEATURE_SELECT: 0x08,
  DRIVER_FEATURE: 0x0c,
  CONFIG_MSIX_VECTOR: 0x10,
  NUM_QUEUES: 0x12,
  DEVICE_STATUS: 0x14,
  CONFIG_GENERATION: 0x15,
  QUEUE_SELECT: 0x16,
  QUEUE_SIZE: 0x18,
  QUEUE_MSIX_VECTOR: 0x1a,
  QUEUE_ENABLE: 0x1c,
  QUEUE_NOTIFY_OFF: 0x1e,
  QUEUE_DESC: 0x20,
  QUEUE_DRIVER: 0x28,
  QUEUE_DEVICE: 0x30,
  QUEUE_NOTIFY_DATA: 0x38,
  QUEUE_RESET: 0x3a,
  /** Size of the structure, virtio 1.2. */
  SIZE: 0x3c,
} as const;

/** "No vector" for config_msix_vector and queue_msix_vector. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** ISR status bits (4.1.4.5). */
export const IsrBit = {
  QUEUE: 1,
  CONFIG: 2,
} as const;

/** Split virtqueue descriptor flags (2.7.5). */
export const DescFlag = {
  NEXT: 1,
  WRITE: 2,
  INDIRECT: 4,
} as const;

/** virtq_avail.flags: the driver asks for no interrupts (without EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** virtq_used.flags: the device asks for no notifications (without EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Largest split queue size (2.7). */
export const MAX_QUEUE_SIZE = 32768;

/** PCI identity of modern virtio devices (4.1.2). */
export const VIRTIO_PCI_VENDOR = 0x1af4;
export const VIRTIO_PCI_DEVICE_BASE = 0x1040;
