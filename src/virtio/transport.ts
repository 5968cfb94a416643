/**
 * The modern virtio-pci transport (virtio 1.2, 4.1) of one device: the
 * common configuration (feature windows, device status, queue setup),
 * the ISR, the device config area and the notify area, all in one memory
 * BAR; interrupts by MSI-X (a vector per queue plus config) or INTx + ISR.
 *
 * The device status machine: 0 resets; FEATURES_OK only sticks when the
 * driver chose a subset of the offered features that includes VERSION_1
 * (and the device accepts it); a device that finds the driver broke a
 * ring sets DEVICE_NEEDS_RESET, stops its queues and raises the config
 * interrupt.
 */
import type { Device } from '../device/device.js';
import { IrqIndex } from '../device/irqs.js';
import type { MaybePromise } from '../device/spec.js';
import { CommonCfg, featureBit, hasFeature, IsrBit, VIRTIO_MSI_NO_VECTOR, VirtioFeature, VirtioStatus } from './constants.js';
import type { VirtioConfig } from './config.js';
import { dmaQueueMemory, type QueueMemory } from '../device/queue-memory.js';
import { BounceBudget, type VirtqueueRequest } from './request.js';
import { Virtqueue, type RingFeatures, type VirtqueueHost, type VirtqueueState } from './virtqueue.js';
import type { QueueControl } from './queue-control.js';
import type { QueueWorkerSpec } from './worker/handler.js';
import { QueueThreads } from './worker/pool.js';
import { HandlerCalls } from './handler-calls.js';
import { resetTimeout, settleAbandoned } from '../device/abandoned.js';

/** What a request handler may use besides the request. */
export interface VirtioContext {
  /** Features the driver accepted (valid once FEATURES_OK). */
  readonly features: bigint;
  /** The device config. */
  readonly config: VirtioConfig;
  /** True when the negotiated features include bit `n`. */
  hasFeature(n: number): boolean;
  /** The driver broke the device's contract: set DEVICE_NEEDS_RESET and stop. */
  needsReset(reason: string): void;
}

/** Serves one request; resolves with the number of bytes written into the writable area. */
export type QueueHandler = (request: VirtqueueRequest, ctx: VirtioContext) => MaybePromise<number>;

/** What the transport needs from the device description. */
export interface TransportOptions {
  features: bigint;
  /** Each queue is served here (`handle`) or on a worker thread (`worker`). */
  queues: readonly { size: number; handle?: QueueHandler; worker?: QueueWorkerSpec }[];
  /** Where worker-thread failures are reported. */
  log?(message: string): void;
  config: VirtioConfig;
  acceptFeatures?(features: bigint, ctx: VirtioContext): boolean;
  onReady?(ctx: VirtioContext): void;
  onReset?(ctx: VirtioContext): void;
  /** How long a reset waits for the main thread's requests it abandons before revoking their memory (default 30 s). */
  resetTimeoutMs?: number;
}

/** The saved transport state (plain JSON). */
export interface TransportState {
  status: number;
  driverFeatures: string;
  deviceFeatureSelect: number;
  driverFeatureSelect: number;
  configMsix: number;
  queueSelect: number;
  configGeneration: number;
  isr: number;
  config: string;
  queues: VirtqueueState[];
}

/** The virtio-pci transport of one device. */
export class VirtioPciTransport implements VirtqueueHost, VirtioContext {
  readonly memory: QueueMemory;
  readonly bounce = new BounceBudget();
  readonly queues: QueueControl[];
  /** The worker threads serving queues off the main thread, when any do. */
  readonly threads: QueueThreads | undefined;
  /** Set when a client connects (or on first access). */
  device: Device | undefined;
  status = 0;
  /** Why the device last set DEVICE_NEEDS_RESET, for logs and tests. */
  brokenReason: string | undefined;
  private driverFeatures = 0n;
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private configMsix = VIRTIO_MSI_NO_VECTOR;
  private queueSelect = 0;
  private configGeneration = 0;
  private isr = 0;
  private paused = false;
  /** Requests handed to each queue's handler on this thread. */
  private readonly served: number[];
  /** Handler calls on this thread, counted while they run (a reset waits for those it abandons). */
  private readonly calls = new HandlerCalls();
  private readonly resetTimeoutMs: number;
  /** The last reset's wait for what it abandoned (see {@link settled}). */
  private abandoned: Promise<void> = Promise.resolve();

  constructor(private readonly options: TransportOptions) {
    this.served = options.queues.map(() => 0);
    this.resetTimeoutMs = resetTimeout(options.resetTimeoutMs);
    this.memory = dmaQueueMemory(() => {
      if (!this.device) throw new Error('virtio: no device');
      return this.device.dma;
    });
    const remote = options.queues.flatMap((q, index) => (q.worker ? [{ index, maxSize: q.size, worker: q.worker }] : []));
    this.threads =
      remote.length === 0
        ? undefined
        : new QueueThreads(remote, this.memory, {
            interrupt: (q) => this.raise(IsrBit.QUEUE, this.queues[q].state.msixVector),
            needsReset: (reason) => this.needsReset(reason),
            features: () => this.driverFeatures,
            log: (m) => options.log?.(m),
          });
    this.queues = options.queues.map((q, i) => this.threads?.queues[i] ?? new Virtqueue(i, q.size, this));
    options.config.onDeviceChange = () => {
      this.configGeneration = (this.configGeneration + 1) & 0xff;
      if (this.status & VirtioStatus.DRIVER_OK) this.configInterrupt();
    };
  }

  get config(): VirtioConfig {
    return this.options.config;
  }

  /** Features offered to the driver. */
  get offered(): bigint {
    return this.options.features;
  }

  get features(): bigint {
    return this.driverFeatures;
  }

  hasFeature(n: number): boolean {
    return hasFeature(this.driverFeatures, n);
  }

  /** Attaches the device whose DMA and interrupts the queues use. */
  attach(device: Device): void {
    this.device = device;
  }

  // ---- common configuration ----

  /** Reads `length` bytes of the common configuration at `offset`. */
  readCommon(offset: number, length: number): Buffer {
    const img = Buffer.alloc(CommonCfg.SIZE + 4);
    const q = this.queues[this.queueSelect];
    const window = (f: bigint, sel: number): number => (sel < 2 ? Number((f >> BigInt(32 * sel)) & 0xffffffffn) : 0);
    img.writeUInt32LE(this.deviceFeatureSelect, CommonCfg.DEVICE_FEATURE_SELECT);
    img.writeUInt32LE(window(this.options.features, this.deviceFeatureSelect), CommonCfg.DEVICE_FEATURE);
    img.writeUInt32LE(this.driverFeatureSelect, CommonCfg.DRIVER_FEATURE_SELECT);
    img.writeUInt32LE(window(this.driverFeatures, this.driverFeatureSelect), CommonCfg.DRIVER_FEATURE);
    img.writeUInt16LE(this.configMsix, CommonCfg.CONFIG_MSIX_VECTOR);
    img.writeUInt16LE(this.queues.length, CommonCfg.NUM_QUEUES);
    img.writeUInt8(this.status, CommonCfg.DEVICE_STATUS);
    img.writeUInt8(this.configGeneration, CommonCfg.CONFIG_GENERATION);
    img.writeUInt16LE(this.queueSelect, CommonCfg.QUEUE_SELECT);
    if (q) {
      img.writeUInt16LE(q.state.size & 0xffff, CommonCfg.QUEUE_SIZE);
      img.writeUInt16LE(q.state.msixVector, CommonCfg.QUEUE_MSIX_VECTOR);
      img.writeUInt16LE(q.isEnabled ? 1 : 0, CommonCfg.QUEUE_ENABLE);
      img.writeUInt16LE(q.index, CommonCfg.QUEUE_NOTIFY_OFF);
      writeU64(img, CommonCfg.QUEUE_DESC, q.state.desc);
      writeU64(img, CommonCfg.QUEUE_DRIVER, q.state.driver);
      writeU64(img, CommonCfg.QUEUE_DEVICE, q.state.device);
      img.writeUInt16LE(q.index, CommonCfg.QUEUE_NOTIFY_DATA);
    } else {
      img.writeUInt16LE(VIRTIO_MSI_NO_VECTOR, CommonCfg.QUEUE_MSIX_VECTOR);
    }
    const out = Buffer.alloc(length);
    if (offset < img.length) img.copy(out, 0, offset, Math.min(img.length, offset + length));
    return out;
  }

  /** A driver write to the common configuration (fields only). A reset (status 0) returns its Promise: see {@link resetDevice}. */
  writeCommon(offset: number, data: Buffer): void | Promise<void> {
    const n = data.length;
    const v = n === 1 ? data[0] : n === 2 ? data.readUInt16LE(0) : n === 4 ? data.readUInt32LE(0) : n === 8 ? Number(data.readBigUInt64LE(0) & 0x1fffffffffffffn) : -1;
    if (v < 0) return;
    const q = this.queues[this.queueSelect];
    const queueWritable = q !== undefined && !q.isEnabled && (this.status & VirtioStatus.DEVICE_NEEDS_RESET) === 0;
    switch (fieldAt(offset, n)) {
      case 'device_feature_select':
        this.deviceFeatureSelect = v;
        return;
      case 'driver_feature_select':
        this.driverFeatureSelect = v;
        return;
      case 'driver_feature':
        if (this.status & VirtioStatus.FEATURES_OK || this.driverFeatureSelect > 1) return;
        {
          const shift = BigInt(32 * this.driverFeatureSelect);
          this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(v) << shift);
        }
        return;
      case 'config_msix_vector':
        this.configMsix = this.validVector(v);
        return;
      case 'device_status':
        if (v === 0) return this.resetDevice();
        this.writeStatus(v);
        return;
      case 'queue_select':
        this.queueSelect = v;
        return;
      case 'queue_size':
        if (queueWritable) q.state.size = v;
        return;
      case 'queue_msix_vector':
        if (q) q.setVector(this.validVector(v));
        return;
      case 'queue_enable':
        if (queueWritable && v === 1) this.enableQueue(q);
        return;
      case 'queue_desc':
      case 'queue_driver':
      case 'queue_device':
        if (queueWritable) setAddress(q, offset, n, data);
        return;
      default:
        return;
    }
  }

  // ---- ISR, notify, device config ----

  /** Reading the ISR returns and clears it. */
  readIsr(): number {
    const v = this.isr;
    this.isr = 0;
    return v;
  }

  /** The driver notified queue `index`. */
  kick(index: number): void {
    const q = this.queues[index];
    if (!q || (this.status & (VirtioStatus.DRIVER_OK | VirtioStatus.DEVICE_NEEDS_RESET)) !== VirtioStatus.DRIVER_OK) return;
    q.kick();
  }

  // ---- VirtqueueHost ----

  dispatch(request: VirtqueueRequest): void {
    const handler = this.options.queues[request.queue].handle;
    if (!handler) {
      request.complete(0); // served on a worker thread: never dispatched here
      return;
    }
    this.served[request.queue]++;
    this.calls.run(request, handler, this);
  }

  interrupt(q: QueueControl): void {
    this.raise(IsrBit.QUEUE, q.state.msixVector);
  }

  onBroken(_q: QueueControl, reason: string): void {
    this.needsReset(reason);
  }

  needsReset(reason: string): void {
    if (this.status & VirtioStatus.DEVICE_NEEDS_RESET) return;
    this.brokenReason = reason;
    this.status |= VirtioStatus.DEVICE_NEEDS_RESET;
    for (const q of this.queues) q.pause();
    if (this.status & VirtioStatus.DRIVER_OK) this.configInterrupt();
  }

  // ---- reset, migration ----

  /**
   * The device reset, whatever asked for it (the driver writing status 0,
   * a client's DEVICE_RESET, an FLR, a disconnect): everything back to its
   * initial state, requests in flight abandoned. Resolves once none of
   * them can write guest memory any more (see {@link settled}): the
   * reset's reply waits for that.
   */
  resetDevice(): Promise<void> {
    this.reset();
    return this.settled();
  }

  /** Everything back to its initial state at once, requests in flight abandoned (their writes dropped); see {@link resetDevice}. */
  reset(): void {
    this.status = 0;
    this.driverFeatures = 0n;
    this.deviceFeatureSelect = this.driverFeatureSelect = 0;
    this.configMsix = VIRTIO_MSI_NO_VECTOR;
    this.queueSelect = 0;
    this.isr = 0;
    this.brokenReason = undefined;
    this.threads?.revive();
    for (const q of this.queues) {
      q.reset();
      this.calls.abandon(q.index);
      if (!this.paused) q.resume();
    }
    this.abandoned = settleAbandoned(this.calls.settled(), { device: this.device, timeoutMs: this.resetTimeoutMs, log: (m) => this.options.log?.(m) });
    this.options.onReset?.(this);
  }

  /**
   * Requests each queue's handler was given since the device was made,
   * and where it runs: 'main', or the number of its worker thread.
   */
  requestCounts(): { queue: number; thread: 'main' | number; requests: number }[] {
    const remote = this.threads?.requestCounts() ?? new Map<number, { thread: number; requests: number }>();
    return this.queues.map((_, queue) => {
      const r = remote.get(queue);
      return r ? { queue, thread: r.thread, requests: r.requests } : { queue, thread: 'main' as const, requests: this.served[queue] };
    });
  }

  /**
   * Resolves once the requests the last reset abandoned can no longer
   * write guest memory: on this thread when their handlers settled (or,
   * after `resetTimeoutMs`, once their memory is revoked), on worker
   * threads when the threads let go of them (or were restarted).
   */
  settled(): Promise<void> {
    const local = this.abandoned;
    return this.threads ? Promise.all([local, this.threads.settled()]).then(() => undefined) : local;
  }

  /**
   * Stops taking requests and waits (at most `timeoutMs`) for those in
   * flight (migration STOP). Resolves false, taking requests again, when
   * they did not finish in time.
   */
  async quiesce(timeoutMs = 30_000): Promise<boolean> {
    this.paused = true;
    for (const q of this.queues) q.pause();
    let timer: NodeJS.Timeout | undefined;
    const idle = Promise.all(this.queues.map((q) => q.idle())).then(() => true);
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const ok = await Promise.race([idle, late]);
    clearTimeout(timer);
    if (!ok) this.resume();
    return ok;
  }

  /** Takes requests again after {@link quiesce}. */
  resume(): void {
    this.paused = false;
    if (this.status & VirtioStatus.DEVICE_NEEDS_RESET) return;
    for (const q of this.queues) if (this.status & VirtioStatus.DRIVER_OK) q.resume();
  }

  /** The state that migrates; take it while quiesced. */
  save(): TransportState {
    return {
      status: this.status,
      driverFeatures: this.driverFeatures.toString(),
      deviceFeatureSelect: this.deviceFeatureSelect,
      driverFeatureSelect: this.driverFeatureSelect,
      configMsix: this.configMsix,
      queueSelect: this.queueSelect,
      configGeneration: this.configGeneration,
      isr: this.isr,
      config: Buffer.from(this.config.bytes).toString('base64'),
      queues: this.queues.map((q) => q.save()),
    };
  }

  /** Restores saved state; throws when it does not fit this device. */
  restore(s: TransportState): void {
    if (typeof s !== 'object' || s === null || !Array.isArray(s.queues) || s.queues.length !== this.queues.length) {
      throw new Error('virtio state does not match this device');
    }
    const ints = [s.status, s.deviceFeatureSelect, s.driverFeatureSelect, s.configMsix, s.queueSelect, s.configGeneration, s.isr];
    if (!ints.every((v) => Number.isSafeInteger(v) && v >= 0) || typeof s.driverFeatures !== 'string' || typeof s.config !== 'string') {
      throw new Error('virtio state is malformed');
    }
    const features = BigInt(s.driverFeatures);
    if ((features & ~this.offered) !== 0n) throw new Error('virtio state has features this device does not offer');
    this.reset();
    this.config.restore(Buffer.from(s.config, 'base64'));
    this.driverFeatures = features;
    this.status = s.status & 0xff;
    this.deviceFeatureSelect = s.deviceFeatureSelect;
    this.driverFeatureSelect = s.driverFeatureSelect;
    this.configMsix = s.configMsix & 0xffff;
    this.queueSelect = s.queueSelect & 0xffff;
    this.configGeneration = s.configGeneration & 0xff;
    this.isr = s.isr & 3;
    const ring = this.ringFeatures();
    s.queues.forEach((qs, i) => {
      const err = this.queues[i].restore(qs, ring);
      if (err) throw new Error(err);
      this.queues[i].pause();
    });
  }

  // ---- internals ----

  private validVector(v: number): number {
    const count = this.device?.irqs.count(IrqIndex.MSIX) ?? 0;
    return v < count ? v : VIRTIO_MSI_NO_VECTOR;
  }

  private ringFeatures(): RingFeatures {
    return { eventIdx: this.hasFeature(VirtioFeature.EVENT_IDX), indirect: this.hasFeature(VirtioFeature.INDIRECT_DESC) };
  }

  private writeStatus(v: number): void {
    const before = this.status;
    let next = (v | before) & 0xff & ~VirtioStatus.DEVICE_NEEDS_RESET;
    const added = next & ~before;
    if (added & VirtioStatus.FEATURES_OK && !this.featuresAcceptable()) next &= ~VirtioStatus.FEATURES_OK;
    this.status = next | (before & VirtioStatus.DEVICE_NEEDS_RESET);
    if (added & VirtioStatus.DRIVER_OK) {
      if (!(next & VirtioStatus.FEATURES_OK)) return this.needsReset('DRIVER_OK without FEATURES_OK');
      this.options.onReady?.(this);
      if (!this.paused && !(this.status & VirtioStatus.DEVICE_NEEDS_RESET)) for (const q of this.queues) q.resume();
    }
  }

  private featuresAcceptable(): boolean {
    const f = this.driverFeatures;
    if ((f & ~this.options.features) !== 0n) return false;
    if (!hasFeature(f, VirtioFeature.VERSION_1)) return false;
    return this.options.acceptFeatures?.(f, this) ?? true;
  }

  private enableQueue(q: QueueControl): void {
    if (!(this.status & VirtioStatus.FEATURES_OK)) return this.needsReset(`queue ${q.index} enabled before FEATURES_OK`);
    const err = q.enable(this.ringFeatures());
    if (err) return this.needsReset(err);
    if (this.paused || !(this.status & VirtioStatus.DRIVER_OK)) q.pause();
  }

  private configInterrupt(): void {
    this.raise(IsrBit.CONFIG, this.configMsix);
  }

  private raise(isrBit: number, vector: number): void {
    const d = this.device;
    if (!d) return;
    if (d.irqs.activeIndex === IrqIndex.MSIX) {
      if (vector !== VIRTIO_MSI_NO_VECTOR && vector < d.irqs.count(IrqIndex.MSIX)) d.triggerIrq(IrqIndex.MSIX, vector);
      return;
    }
    this.isr |= isrBit;
    if (d.irqs.count(IrqIndex.INTX) > 0) d.triggerIrq(IrqIndex.INTX, 0);
  }
}

/** Names the common-config field an access of `n` bytes at `offset` hits (64-bit fields by halves too). */
function fieldAt(offset: number, n: number): string | undefined {
  const fields: [string, number, number][] = [
    ['device_feature_select', CommonCfg.DEVICE_FEATURE_SELECT, 4],
    ['driver_feature_select', CommonCfg.DRIVER_FEATURE_SELECT, 4],
    ['driver_feature', CommonCfg.DRIVER_FEATURE, 4],
    ['config_msix_vector', CommonCfg.CONFIG_MSIX_VECTOR, 2],
    ['device_status', CommonCfg.DEVICE_STATUS, 1],
    ['queue_select', CommonCfg.QUEUE_SELECT, 2],
    ['queue_size', CommonCfg.QUEUE_SIZE, 2],
    ['queue_msix_vector', CommonCfg.QUEUE_MSIX_VECTOR, 2],
    ['queue_enable', CommonCfg.QUEUE_ENABLE, 2],
    ['queue_desc', CommonCfg.QUEUE_DESC, 8],
    ['queue_driver', CommonCfg.QUEUE_DRIVER, 8],
    ['queue_device', CommonCfg.QUEUE_DEVICE, 8],
  ];
  for (const [name, at, width] of fields) {
    if (offset === at && n === width) return name;
    if (width === 8 && n === 4 && (offset === at || offset === at + 4)) return name;
  }
  return undefined;
}

function setAddress(q: QueueControl, offset: number, n: number, data: Buffer): void {
  const base = offset >= CommonCfg.QUEUE_DEVICE ? CommonCfg.QUEUE_DEVICE : offset >= CommonCfg.QUEUE_DRIVER ? CommonCfg.QUEUE_DRIVER : CommonCfg.QUEUE_DESC;
  const key = base === CommonCfg.QUEUE_DESC ? 'desc' : base === CommonCfg.QUEUE_DRIVER ? 'driver' : 'device';
  const old = BigInt(q.state[key]);
  let value: bigint;
  if (n === 8) value = data.readBigUInt64LE(0);
  else if (offset === base) value = (old & ~0xffffffffn) | BigInt(data.readUInt32LE(0));
  else value = (old & 0xffffffffn) | (BigInt(data.readUInt32LE(0)) << 32n);
  // Addresses beyond 2^53 cannot be mapped: keep an unaligned marker that enable() refuses.
  q.state[key] = value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : 1;
}

function writeU64(b: Buffer, at: number, v: number): void {
  b.writeBigUInt64LE(BigInt(v), at);
}

/** VERSION_1 plus the ring features a device offers. */
export function transportFeatures(ring: { indirectDesc: boolean; eventIdx: boolean }): bigint {
  let f = featureBit(VirtioFeature.VERSION_1);
  if (ring.indirectDesc) f |= featureBit(VirtioFeature.INDIRECT_DESC);
  if (ring.eventIdx) f |= featureBit(VirtioFeature.EVENT_IDX);
  return f;
}
