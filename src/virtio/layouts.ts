/**
 * The virtio structures muser reads and writes in guest memory, each
 * declared once (layout/struct.ts): the split virtqueue's descriptor
 * (virtio 1.2, 2.7.5), the virtio-pci capability (4.1.4), and virtio-blk's
 * request header, discard /
 * write-zeroes segment (5.2.6) and device configuration (5.2.4). Offsets
 * follow from the field order; the comments give the specification's byte
 * offsets, and the golden-bytes tests hold each layout to them.
 */
import { defineStruct } from '../layout/struct.js';

/** A descriptor's fields (struct virtq_desc). */
export interface DescriptorFields {
  /** Guest-physical address, as the driver wrote it. */
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** A split virtqueue descriptor, 16 bytes. */
export const DESCRIPTOR = defineStruct<DescriptorFields>('virtq_desc', {
  addr: 'u64big', // 0
  len: 'u32', // 8
  flags: 'u16', // 12
  next: 'u16', // 14
});

/** A virtio-pci capability's fields after the PCI capability header (struct virtio_pci_cap from cfg_type). */
export interface VirtioPciCapFields {
  cfgType: number;
  bar: number;
  /** Identifies one of several capabilities of a type (0: one each here). */
  id: number;
  offset: number;
  length: number;
}

/** The PCI capability header before a vendor capability's data: cap_vndr, cap_next, cap_len. */
export const PCI_CAP_HEADER = 3;

/**
 * A virtio-pci capability from cfg_type on, 13 bytes (the PCI layer writes
 * the 3-byte header); the notify capability's notify_off_multiplier and the
 * PCI configuration access capability's pci_cfg_data (4 bytes each) follow.
 */
export const VIRTIO_PCI_CAP = defineStruct<VirtioPciCapFields>('virtio_pci_cap', {
  cfgType: 'u8', // 3
  bar: 'u8', // 4
  id: 'u8', // 5
  _padding: 2, // 6
  offset: 'u32', // 8
  length: 'u32', // 12
});

/** A virtio-blk request header's fields (struct virtio_blk_req, up to the data). */
export interface BlkRequestHeaderFields {
  type: number;
  sector: bigint;
}

/** virtio-blk request header, 16 bytes. */
export const BLK_REQUEST_HEADER = defineStruct<BlkRequestHeaderFields>('virtio_blk_req header', {
  type: 'u32', // 0
  _reserved: 4, // 4
  sector: 'u64big', // 8
});

/** A discard / write-zeroes segment's fields (struct virtio_blk_discard_write_zeroes). */
export interface BlkRangeFields {
  sector: bigint;
  numSectors: number;
  /** Bit 0: unmap (write-zeroes only). */
  flags: number;
}

/** virtio-blk discard / write-zeroes segment, 16 bytes. */
export const BLK_RANGE = defineStruct<BlkRangeFields>('virtio_blk_discard_write_zeroes', {
  sector: 'u64big', // 0
  numSectors: 'u32', // 8
  flags: 'u32', // 12
});

/** virtio-blk's device configuration fields (struct virtio_blk_config); names as the spec's. */
export interface BlkConfigFields {
  capacity: bigint;
  size_max: number;
  seg_max: number;
  cylinders: number;
  heads: number;
  sectors: number;
  blk_size: number;
  physical_block_exp: number;
  alignment_offset: number;
  min_io_size: number;
  opt_io_size: number;
  writeback: number;
  num_queues: number;
  max_discard_sectors: number;
  max_discard_seg: number;
  discard_sector_alignment: number;
  max_write_zeroes_sectors: number;
  max_write_zeroes_seg: number;
  write_zeroes_may_unmap: number;
}

/** virtio-blk device configuration, 60 bytes (up to write_zeroes_may_unmap and its padding). */
export const BLK_CONFIG = defineStruct<BlkConfigFields>('virtio_blk_config', {
  capacity: 'u64big', // 0
  size_max: 'u32', // 8
  seg_max: 'u32', // 12
  cylinders: 'u16', // 16: geometry
  heads: 'u8', // 18
  sectors: 'u8', // 19
  blk_size: 'u32', // 20
  physical_block_exp: 'u8', // 24: topology
  alignment_offset: 'u8', // 25
  min_io_size: 'u16', // 26
  opt_io_size: 'u32', // 28
  writeback: 'u8', // 32
  _unused0: 1, // 33
  num_queues: 'u16', // 34
  max_discard_sectors: 'u32', // 36
  max_discard_seg: 'u32', // 40
  discard_sector_alignment: 'u32', // 44
  max_write_zeroes_sectors: 'u32', // 48
  max_write_zeroes_seg: 'u32', // 52
  write_zeroes_may_unmap: 'u8', // 56
  _unused1: 3, // 57
});
