/**
 * The virtio-pci BAR (virtio 1.2, 4.1.4) as a register table: the common
 * configuration, the ISR, the device config and the notify area, declared
 * once with the register DSL.
 *
 * The transport's own registers (feature selects, config vector, device
 * status, config generation, queue select, ISR) are stored values of the
 * table: reads come straight from them, a device reset puts them back, and
 * migration carries them. What belongs to other state is a window onto it:
 * the 32-bit feature word chosen by its select register, and the fields of
 * the queue chosen by `queue_select`, which live in that queue.
 *
 * Write rules kept from the specification: 16-bit queue fields take 16-bit
 * writes, the 64-bit ring addresses 64-bit writes or 32-bit halves, the
 * driver feature word 32-bit writes; writes of another width are ignored.
 */
import type { Device } from '../device/device.js';
import { defineRegisters, type RegisterEntry, type RegisterMap, type RegisterWidth } from '../device/registers.js';
import type { MaybePromise } from '../device/spec.js';
import type { VirtioConfig } from './config.js';
import { CommonCfg, VIRTIO_MSI_NO_VECTOR } from './constants.js';
import type { VirtioBarLayout } from './pci-caps.js';
import type { QueueControl } from './queue-control.js';

/** What the table's hooks ask of the transport. */
export interface VirtioRegisterHost {
  /** Features offered to the driver. */
  readonly offered: bigint;
  /** Features the driver wrote so far. */
  readonly features: bigint;
  readonly queues: readonly QueueControl[];
  /** Remembers the device whose DMA and interrupts the queues use. */
  attach(device: Device): void;
  /** The driver wrote feature word `select` (0 or 1). */
  writeDriverFeatures(select: number, word: number): void;
  /** The driver wrote `value` to device_status, which held `before`: the status machine (0 resets). */
  writeStatus(value: number, before: number): MaybePromise<void>;
  /** `vector` when the MSI-X table has it, else NO_VECTOR. */
  validVector(vector: number): number;
  /** True while the driver may still set queue `q` up. */
  queueWritable(q: QueueControl): boolean;
  /** The driver wrote 1 to queue_enable. */
  enableQueue(q: QueueControl): void;
  /** The driver notified queue `index`. */
  kick(index: number): void;
}

/** Names of the table's stored registers, for the transport's get/set. */
export const Reg = {
  DEVICE_FEATURE_SELECT: 'device_feature_select',
  DRIVER_FEATURE_SELECT: 'driver_feature_select',
  CONFIG_MSIX_VECTOR: 'config_msix_vector',
  DEVICE_STATUS: 'device_status',
  CONFIG_GENERATION: 'config_generation',
  QUEUE_SELECT: 'queue_select',
  ISR: 'isr',
} as const;

/** `width` bytes at `offset` of `value` (a window's lane). */
function lane(value: number | bigint, offset: number, width: number): number | bigint {
  // 32-bit values (all but the ring addresses) without BigInt: the window's read hook cuts to the width.
  if (typeof value === 'number' && value >= 0 && value <= 0xffffffff) return value >>> (offset * 8);
  return BigInt.asUintN(width * 8, BigInt(value) >> BigInt(offset * 8));
}

/** Feature word `select` of `features` (0 beyond the two words defined). */
function featureWord(features: bigint, select: number): number {
  return select < 2 ? Number((features >> BigInt(32 * select)) & 0xffffffffn) : 0;
}

/** The register table of the virtio BAR laid out as `layout` says. */
export function virtioBarRegisters(host: VirtioRegisterHost, config: VirtioConfig, layout: VirtioBarLayout): RegisterMap<Device> {
  let map: RegisterMap<Device> | undefined;
  const get = (name: string): number => map!.get(name);
  const selected = (): QueueControl | undefined => host.queues[get(Reg.QUEUE_SELECT)];
  const at = (offset: number): number => layout.common.offset + offset;

  /** A 16-bit field of the selected queue: reads `read(q)` (or `none` without a queue), takes 16-bit writes. */
  const queueField = (name: string, offset: number, read: (q: QueueControl) => number, none: number, write?: (q: QueueControl, v: number, device: Device) => void): RegisterEntry<Device> => ({
    name,
    offset: at(offset),
    size: 2,
    window: true,
    access: write ? 'rw' : 'ro',
    read: (off, width) => lane(selected() ? read(selected()!) : none, off, width),
    write: write
      ? (off, v, width, device) => {
          const q = selected();
          if (q && width === 2) write(q, Number(v), device);
        }
      : undefined,
  });

  /** A 64-bit ring address of the selected queue: whole, or by 32-bit halves, while the queue is set up. */
  const queueAddress = (name: string, offset: number, key: 'desc' | 'driver' | 'device'): RegisterEntry<Device> => ({
    name,
    offset: at(offset),
    size: 8,
    window: true,
    read: (off, width) => lane(selected()?.state[key] ?? 0, off, width),
    write: (off, v, width) => {
      const q = selected();
      if (!q || !host.queueWritable(q) || (width !== 8 && width !== 4)) return;
      const old = BigInt(q.state[key]);
      const value = width === 8 ? BigInt(v) : off === 0 ? (old & ~0xffffffffn) | BigInt(v) : (old & 0xffffffffn) | (BigInt(v) << 32n);
      // Addresses beyond 2^53 cannot be mapped: keep an unaligned marker that enable() refuses.
      q.state[key] = value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : 1;
    },
  });

  const common: RegisterEntry<Device>[] = [
    { name: Reg.DEVICE_FEATURE_SELECT, offset: at(CommonCfg.DEVICE_FEATURE_SELECT), width: 4 },
    {
      name: 'device_feature', offset: at(CommonCfg.DEVICE_FEATURE), size: 4, window: true, access: 'ro',
      read: (off, width) => lane(featureWord(host.offered, get(Reg.DEVICE_FEATURE_SELECT)), off, width),
    },
    { name: Reg.DRIVER_FEATURE_SELECT, offset: at(CommonCfg.DRIVER_FEATURE_SELECT), width: 4 },
    {
      name: 'driver_feature', offset: at(CommonCfg.DRIVER_FEATURE), size: 4, window: true,
      read: (off, width) => lane(featureWord(host.features, get(Reg.DRIVER_FEATURE_SELECT)), off, width),
      write: (_off, v, width) => {
        if (width === 4) host.writeDriverFeatures(get(Reg.DRIVER_FEATURE_SELECT), Number(v));
      },
    },
    {
      name: Reg.CONFIG_MSIX_VECTOR, offset: at(CommonCfg.CONFIG_MSIX_VECTOR), width: 2, reset: VIRTIO_MSI_NO_VECTOR,
      write: (v, device) => {
        host.attach(device);
        map!.set(Reg.CONFIG_MSIX_VECTOR, host.validVector(v));
      },
    },
    { name: 'num_queues', offset: at(CommonCfg.NUM_QUEUES), width: 2, access: 'ro', reset: host.queues.length },
    {
      name: Reg.DEVICE_STATUS, offset: at(CommonCfg.DEVICE_STATUS), width: 1,
      // A reset (0) returns its Promise: the write's reply waits until abandoned requests cannot write guest memory.
      write: (v, device, before) => {
        host.attach(device);
        return host.writeStatus(v, before);
      },
    },
    { name: Reg.CONFIG_GENERATION, offset: at(CommonCfg.CONFIG_GENERATION), width: 1, access: 'ro' },
    { name: Reg.QUEUE_SELECT, offset: at(CommonCfg.QUEUE_SELECT), width: 2 },
    queueField('queue_size', CommonCfg.QUEUE_SIZE, (q) => q.state.size & 0xffff, 0, (q, v) => {
      if (host.queueWritable(q)) q.state.size = v;
    }),
    queueField('queue_msix_vector', CommonCfg.QUEUE_MSIX_VECTOR, (q) => q.state.msixVector, VIRTIO_MSI_NO_VECTOR, (q, v, device) => {
      host.attach(device);
      q.setVector(host.validVector(v));
    }),
    queueField('queue_enable', CommonCfg.QUEUE_ENABLE, (q) => (q.isEnabled ? 1 : 0), 0, (q, v, device) => {
      host.attach(device);
      if (host.queueWritable(q) && v === 1) host.enableQueue(q);
    }),
    queueField('queue_notify_off', CommonCfg.QUEUE_NOTIFY_OFF, (q) => q.index, 0),
    queueAddress('queue_desc', CommonCfg.QUEUE_DESC, 'desc'),
    queueAddress('queue_driver', CommonCfg.QUEUE_DRIVER, 'driver'),
    queueAddress('queue_device', CommonCfg.QUEUE_DEVICE, 'device'),
    queueField('queue_notify_data', CommonCfg.QUEUE_NOTIFY_DATA, (q) => q.index, 0),
  ];
  const notify = layout.notify;
  const entries: RegisterEntry<Device>[] = [
    ...common,
    // Reading the ISR returns and clears it; the rest of the ISR area reads as zero.
    { name: Reg.ISR, offset: layout.isr.offset, width: 1, access: 'rc' },
    {
      // Doorbells: queue i at notify_off (= i) times the multiplier; the value written is not used.
      name: 'notify', offset: notify.offset, size: notify.length, window: true, access: 'wo', trace: false,
      write: (off, _v, _width: RegisterWidth, device) => {
        if (off % notify.multiplier !== 0) return;
        host.attach(device);
        host.kick(off / notify.multiplier);
      },
    },
  ];
  if (layout.device) {
    entries.push({
      name: 'device_config', offset: layout.device.offset, size: layout.device.length,
      read: (off, length) => config.read(off, length),
      write: (off, data) => config.write(off, data),
    });
  }
  map = defineRegisters<Device>(entries);
  return map;
}
