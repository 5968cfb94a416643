/**
 * The modern virtio-pci transport (virtio 1.2, 4.1) of one device: the
 * common configuration (feature windows, device status, queue setup),
 * the ISR, the device config area and the notify area, all in one memory
 * BAR declared as a register table (pci-registers.ts), whose stored values
 * are the transport's registers; interrupts by MSI-X (a vector per queue
 * plus config) or INTx + ISR.
 *
 * The device status machine: 0 resets; FEATURES_OK only sticks when the
 * driver chose a subset of the offered features that includes VERSION_1
 * (and the device accepts it); a device that finds the driver broke a
 * ring sets DEVICE_NEEDS_RESET, stops its queues and raises the config
 * interrupt.
 */
import type { Device } from '../device/device.js';
import { IrqIndex } from '../device/irqs.js';
import type { RegisterMap, RegisterValues } from '../device/registers.js';
import type { MaybePromise } from '../device/spec.js';
import { featureBit, hasFeature, IsrBit, VIRTIO_MSI_NO_VECTOR, VirtioFeature, VirtioStatus } from './constants.js';
import type { VirtioConfig } from './config.js';
import { dmaQueueMemory, type QueueMemory } from '../device/queue-memory.js';
import type { VirtqueueRequest } from './request.js';
import { BounceBudget } from './bounce-budget.js';
import { Virtqueue, type RingFeatures, type VirtqueueHost, type VirtqueueState } from './virtqueue.js';
import type { QueueControl } from './queue-control.js';
import type { QueueWorkerSpec } from './worker/handler.js';
import { QueueThreads } from './worker/pool.js';
import { HandlerCalls } from './handler-calls.js';
import { resetTimeout, settleAbandoned } from '../device/abandoned.js';
import type { VirtioBarLayout } from './pci-caps.js';
import { Reg, virtioBarRegisters, type VirtioRegisterHost } from './pci-registers.js';
import { InflightLog } from './inflight-log.js';
import { inflightLog } from './crash-points.js';

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
  /** A request failed (the driver's mistake, or the backend's): say why in the server's log, rate-limited (see {@link Device.warnDriver}). */
  warnDriver(message: string): void;
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
  /** Where the common config, ISR, device config and notify area lie in the BAR. */
  layout: VirtioBarLayout;
  acceptFeatures?(features: bigint, ctx: VirtioContext): boolean;
  onReady?(ctx: VirtioContext): void;
  onReset?(ctx: VirtioContext): void;
  /** How long a reset waits for the main thread's requests it abandons before revoking their memory (default 30 s). */
  resetTimeoutMs?: number;
  /** Idle queues poll their avail ring this long with notifications off (default: the server's `--poll` window; 0: never). */
  pollMicroseconds?: number;
}

/** The saved transport state (plain JSON). */
export interface TransportState {
  /** The register table's stored values (status, selects, vectors, generation, ISR). */
  registers: RegisterValues;
  driverFeatures: string;
  config: string;
  queues: VirtqueueState[];
}

/** The virtio-pci transport of one device. */
export class VirtioPciTransport implements VirtqueueHost, VirtioContext, VirtioRegisterHost {
  readonly memory: QueueMemory;
  readonly bounce = new BounceBudget();
  readonly queues: QueueControl[];
  /** The worker threads serving queues off the main thread, when any do. */
  readonly threads: QueueThreads | undefined;
  /** Set when a client connects (or on first access). */
  device: Device | undefined;
  /** The BAR's register table; its stored values are the transport's registers. */
  readonly registers: RegisterMap<Device>;
  /** Why the device last set DEVICE_NEEDS_RESET, for logs and tests. */
  brokenReason: string | undefined;
  private driverFeatures = 0n;
  private paused = false;
  /** Requests handed to each queue's handler on this thread. */
  private readonly served: number[];
  /** Handler calls on this thread, counted while they run (a reset waits for those it abandons). */
  private readonly calls = new HandlerCalls();
  private readonly resetTimeoutMs: number;
  /** The last reset's wait for what it abandoned (see {@link settled}). */
  private abandoned: Promise<void> = Promise.resolve();
  /** A queue's inflight log could not be had (warned once). */
  private warnedLog = false;

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
            warnDriver: (message) => this.warnDriver(message),
            features: () => this.driverFeatures,
            pollMicroseconds: () => this.pollMicroseconds,
            log: (m) => options.log?.(m),
          });
    this.queues = options.queues.map((q, i) => this.threads?.queues[i] ?? new Virtqueue(i, q.size, this));
    this.registers = virtioBarRegisters(this, options.config, options.layout);
    options.config.onDeviceChange = () => {
      this.registers.set(Reg.CONFIG_GENERATION, (this.registers.get(Reg.CONFIG_GENERATION) + 1) & 0xff);
      if (this.status & VirtioStatus.DRIVER_OK) this.configInterrupt();
    };
  }

  /** The device status register. */
  get status(): number {
    return this.registers.get(Reg.DEVICE_STATUS);
  }

  private set status(v: number) {
    this.registers.set(Reg.DEVICE_STATUS, v);
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

  /** How long an idle queue on this thread polls its avail ring (see VirtqueueHost). */
  get pollMicroseconds(): number {
    return this.options.pollMicroseconds ?? (this.device?.link?.pollIdleMs ?? 0) * 1000;
  }

  /** Attaches the device whose DMA and interrupts the queues use. */
  attach(device: Device): void {
    this.device = device;
  }

  // ---- what the register table asks (see pci-registers.ts) ----

  /** @internal The driver wrote feature word `select`: ignored once FEATURES_OK, or beyond the two words. */
  writeDriverFeatures(select: number, word: number): void {
    if (this.status & VirtioStatus.FEATURES_OK || select > 1) return;
    const shift = BigInt(32 * select);
    this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(word) << shift);
  }

  /** @internal A queue may be set up while disabled and the device is not broken. */
  queueWritable(q: QueueControl): boolean {
    return !q.isEnabled && (this.status & VirtioStatus.DEVICE_NEEDS_RESET) === 0;
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

  warnDriver(message: string): void {
    this.device?.warnDriver(message);
  }

  needsReset(reason: string): void {
    if (this.status & VirtioStatus.DEVICE_NEEDS_RESET) return;
    this.brokenReason = reason;
    this.device?.link?.log?.error(`device needs reset (DEVICE_NEEDS_RESET): ${reason}`);
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
    this.registers.reset();
    this.driverFeatures = 0n;
    this.brokenReason = undefined;
    this.threads?.revive();
    for (const q of this.queues) {
      // The queue's reset clears its inflight log; enabling it again starts a new one.
      q.reset();
      q.attachLog(undefined);
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
      registers: this.registers.saveValues(),
      driverFeatures: this.driverFeatures.toString(),
      config: Buffer.from(this.config.bytes).toString('base64'),
      queues: this.queues.map((q) => q.save()),
    };
  }

  /** Restores saved state; throws when it does not fit this device. Under --isolate, the restored queues are logged from their restored indices. */
  restore(s: TransportState): void {
    this.restoreState(s, true);
  }

  /**
   * In a successor process under --isolate (the device's onRecover): the
   * transport as the checkpoint left it (`device.state.virtio`, stored by
   * {@link checkpoint}), then each queue finished from its inflight log
   * before it runs again; then one interrupt per queue, since the dead
   * process may have published without interrupting (a spurious interrupt
   * is harmless, a lost one hangs the driver). A queue the checkpoint has
   * enabled but whose log is not live (a reset was under way, or the log
   * could not be had) sets DEVICE_NEEDS_RESET rather than guess. Resolves
   * with the number of requests executed again.
   */
  async recover(device: Device): Promise<number> {
    this.attach(device);
    for (const q of this.queues) q.attachLog(undefined);
    const saved = device.state.virtio;
    // Restored paused: nothing is taken with the checkpoint's indices, which the logs overrule.
    if (saved !== undefined) this.restoreState(saved as TransportState, false);
    let again = 0;
    let lost: string | undefined;
    for (const q of this.queues) {
      const log = this.attachLog(q);
      if (!q.isEnabled) {
        // Enabled after the checkpoint (that request is served again), or never.
        log?.clear();
        continue;
      }
      if (!log?.live) {
        lost ??= `queue ${q.index}`;
        continue;
      }
      if (this.status & VirtioStatus.DEVICE_NEEDS_RESET) continue;
      try {
        again += await q.recover();
      } catch (e) {
        // Rings gone from guest memory, a broken chain: as a running queue would, ask the driver for a reset.
        this.needsReset(`queue ${q.index}: cannot finish the requests in flight: ${(e as Error).message}`);
      }
    }
    if (lost) this.needsReset(`${lost}: its requests in flight were lost with the process that served them`);
    this.resume();
    if (this.status & VirtioStatus.DRIVER_OK) for (const q of this.queues) if (q.isEnabled) this.interrupt(q);
    return again;
  }

  /** Under --isolate, before each checkpoint: the transport's state goes where the checkpoint (the default save) takes it. */
  checkpoint(device: Device): void {
    device.state.virtio = this.save();
  }

  /** Restores saved state; `logged`: each queue's inflight log starts from the restored indices (a queue's restore enables it). */
  private restoreState(s: TransportState, logged: boolean): void {
    if (typeof s !== 'object' || s === null || !Array.isArray(s.queues) || s.queues.length !== this.queues.length) {
      throw new Error('virtio state does not match this device');
    }
    if (typeof s.registers !== 'object' || s.registers === null || typeof s.driverFeatures !== 'string' || !/^\d+$/.test(s.driverFeatures) || typeof s.config !== 'string') {
      throw new Error('virtio state is malformed');
    }
    const features = BigInt(s.driverFeatures);
    if ((features & ~this.offered) !== 0n) throw new Error('virtio state has features this device does not offer');
    this.reset();
    try {
      this.registers.loadValues(s.registers);
    } catch (e) {
      throw new Error(`virtio state is malformed: ${(e as Error).message}`);
    }
    this.config.restore(Buffer.from(s.config, 'base64'));
    this.driverFeatures = features;
    const ring = this.ringFeatures();
    s.queues.forEach((qs, i) => {
      if (logged) this.attachLog(this.queues[i]);
      const err = this.queues[i].restore(qs, ring);
      if (err) throw new Error(err);
      this.queues[i].pause();
    });
  }

  // ---- internals ----

  /** @internal `v` when the MSI-X table has that vector, else NO_VECTOR. */
  validVector(v: number): number {
    const count = this.device?.irqs.count(IrqIndex.MSIX) ?? 0;
    return v < count ? v : VIRTIO_MSI_NO_VECTOR;
  }

  private ringFeatures(): RingFeatures {
    return { eventIdx: this.hasFeature(VirtioFeature.EVENT_IDX), indirect: this.hasFeature(VirtioFeature.INDIRECT_DESC) };
  }

  /** @internal The driver wrote `v` to device_status, which held `before`; 0 resets (see {@link resetDevice}). */
  writeStatus(v: number, before: number): void | Promise<void> {
    if (v === 0) return this.resetDevice();
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

  /** @internal The driver enabled queue `q`. */
  enableQueue(q: QueueControl): void {
    if (!(this.status & VirtioStatus.FEATURES_OK)) return this.needsReset(`queue ${q.index} enabled before FEATURES_OK`);
    // Under --isolate, enabling starts the queue's inflight log.
    this.attachLog(q);
    const err = q.enable(this.ringFeatures());
    if (err) return this.needsReset(err);
    if (this.paused || !(this.status & VirtioStatus.DRIVER_OK)) q.pause();
  }

  /**
   * Attaches queue `q`'s inflight log in the device's persistent memory
   * (under --isolate; undefined otherwise, or when it cannot be had: then
   * warned about once) and returns it. Attaching does not change it.
   */
  private attachLog(q: QueueControl): InflightLog | undefined {
    const memory = this.device?.persistent;
    let log: InflightLog | undefined;
    if (memory) {
      try {
        const area = memory.area(`virtio queue ${q.index} inflight`, InflightLog.bytes(q.maxSize));
        log = inflightLog(area, q.maxSize, memory.locate?.(area));
      } catch (e) {
        if (!this.warnedLog) this.options.log?.(`queue ${q.index}: no inflight log (${(e as Error).message}): its requests in flight are lost if the process dies`);
        this.warnedLog = true;
      }
    }
    q.attachLog(log);
    return log;
  }

  private configInterrupt(): void {
    this.raise(IsrBit.CONFIG, this.registers.get(Reg.CONFIG_MSIX_VECTOR));
  }

  private raise(isrBit: number, vector: number): void {
    const d = this.device;
    if (!d) return;
    if (d.irqs.activeIndex === IrqIndex.MSIX) {
      if (vector !== VIRTIO_MSI_NO_VECTOR && vector < d.irqs.count(IrqIndex.MSIX)) d.triggerIrq(IrqIndex.MSIX, vector);
      return;
    }
    this.registers.set(Reg.ISR, this.registers.get(Reg.ISR) | isrBit);
    if (d.irqs.count(IrqIndex.INTX) > 0) d.triggerIrq(IrqIndex.INTX, 0);
  }
}

/** VERSION_1 plus the ring features a device offers. */
export function transportFeatures(ring: { indirectDesc: boolean; eventIdx: boolean }): bigint {
  let f = featureBit(VirtioFeature.VERSION_1);
  if (ring.indirectDesc) f |= featureBit(VirtioFeature.INDIRECT_DESC);
  if (ring.eventIdx) f |= featureBit(VirtioFeature.EVENT_IDX);
  return f;
}
