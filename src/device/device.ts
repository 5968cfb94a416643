/**
 * A servable PCI device: config space, regions, interrupts and DMA access,
 * built from a {@link DeviceSpec}. One client at a time drives it; the
 * per-connection parts (DMA maps, IRQ eventfds) are dropped on disconnect.
 */
import { ConfigSpace, type MsixTable } from '../pci/index.js';
import { native } from '../native/index.js';
import { DeviceError, Errno } from './errors.js';
import { IrqIndex, IrqState, type TriggerResult } from './irqs.js';
import { adoptMemory, type Region } from './regions.js';
import type { GatedDmaAccess } from './gated-dma.js';
import type { DmaTable } from './dma.js';
import type { DmaAccess } from './dma-access.js';
import { DoorbellThreads } from './threads/doorbell.js';
import type { DeviceSpec, ResetReason } from './spec.js';
import { PciCommand } from '../pci/regs.js';
import { ConfigLayout } from './config-registers.js';
import { barDescriptions, buildRegions, capabilityList, placeMsix, registerMapRegions } from './device-layout.js';
import { registerMapsOf, type PlacedRegisterMap } from './register-maps.js';
import { validateSpec } from './validate-spec.js';
import type { Logger } from './logger.js';
import { RateLimitedWarnings } from './rate-limited-warnings.js';
import type { MemoryWatch } from './memory-watch.js';
import { UnmodeledAccesses } from './unmodeled.js';
import type { PersistentMemory } from './persistent.js';

import type { MsixPlacement } from './device-layout.js';
export type { MsixPlacement } from './device-layout.js';

/** What a connected client lends the device: DMA and a way to stay quiet. */
export interface DeviceLink {
  readonly dma: GatedDmaAccess;
  /** True while migration requires the device to be quiesced. */
  readonly quiesced: boolean;
  /** The busy-poll window the server serves this client with, in ms (`--poll`; 0: it sleeps in epoll). */
  readonly pollIdleMs?: number;
  /** The serving server's logger: what goes wrong with the device that its driver's developer should hear of. */
  readonly log?: Logger;
}



type DeviceClass = Device;
declare module './types.js' {
  // What callbacks receive (types.ts declares it ahead, for the spec types below this class).
  interface Device extends DeviceClass {}
}

/** A PCI device built from a spec, ready to be served. */
export class Device {
  readonly name: string;
  readonly config: ConfigSpace;
  readonly irqs: IrqState;
  readonly msix: MsixTable | undefined;
  readonly msixPlacement: MsixPlacement | undefined;
  /** Regions by index; holes are undefined. */
  readonly regions: (Region | undefined)[];
  /** The worker threads of doorbells served off the main thread (`ioeventfds: [{ worker }]`), if any. */
  readonly doorbellThreads: DoorbellThreads | undefined;
  /** DMA needs Bus Master Enable (`spec.requireBusMaster`, default true). */
  readonly requiresBusMaster: boolean;
  /** Plain-data device state, migrated as JSON when no custom migration is given. */
  state: Record<string, unknown>;
  /** Memory that outlives this process, while an isolated child serves a connection (see persistent.ts). */
  persistent: PersistentMemory | undefined;
  private currentLink: DeviceLink | undefined;
  private readonly driverWarnings = new RateLimitedWarnings(() => this.currentLink?.log, 'driver errors');
  /** The DMA of the connected client, or of the last one: a reset after a disconnect may still have to revoke its memory. */
  private lastDma: GatedDmaAccess | undefined;
  /** @internal What owns each config-space byte: the standard model or a `configRegisters` entry. */
  readonly configLayout: ConfigLayout;
  /** @internal The register maps the device serves (BARs and regions built by `.bar()`, `configRegisters`): reset with it, migrated with it. */
  readonly registerMaps: readonly PlacedRegisterMap[];
  /**
   * Where access traces go (unclaimed config bytes, refused accesses): the
   * serving Server's logger when it logs at debug level, else undefined.
   */
  traceLog: Logger | undefined;
  /**
   * Guest accesses that hit no register (unused offsets of a register map,
   * unclaimed config bytes, a BAR with nothing serving the direction),
   * counted per place since the device was built. `muser run` prints
   * them when it stops; `device.unmodeled.report()` lists them.
   */
  readonly unmodeled: UnmodeledAccesses;
  /** Regions whose memfd a predecessor served (adoptRegionMemory), until watching starts. */
  private adoptedMemory = new Set<number>();
  /** Run first on every reset: per-device machinery (migration) returns to its power-on state. */
  private readonly resetListeners: (() => void)[] = [];
  /** Told when migration stops the device and lets it run again (timers pause and resume). */
  private readonly quiesceListeners: ((quiesced: boolean) => void)[] = [];
  /** Triggers that arrived while quiesced; replayed when running again. */
  private deferred: { index: number; vector: number }[] = [];
  /** See {@link onInterruptRouting}. */
  private readonly routingListeners = new Set<() => void>();
  /** What a config write started (an FLR, a reset through a capability window), until the write's reply takes it. */
  private configWait: Promise<void> | undefined;

  constructor(readonly spec: DeviceSpec) {
    validateSpec(spec);
    const busy = spec.timers?.find((t) => t.device !== undefined);
    if (busy) throw new TypeError(`${busy.name}: already serves device ${busy.device!.name}; a timer serves one device (create one per device)`);
    const taken = watchesOf(spec).find((w) => w.servedDevice !== undefined);
    if (taken) throw new TypeError(`${taken.name}: already serves device ${taken.servedDevice!.name}; a watch serves one region of one device (create one per device)`);
    this.name = spec.name ?? `device-${spec.identity.vendorId.toString(16)}:${spec.identity.deviceId.toString(16)}`;
    this.state = spec.state ?? {};
    this.requiresBusMaster = spec.requireBusMaster !== false; // only `false` waives Bus Master Enable (validateSpec checked the type)
    const interrupts = spec.interrupts ?? {};
    this.msixPlacement = placeMsix(spec, interrupts);
    const bars = barDescriptions(spec, this.msixPlacement);
    this.config = new ConfigSpace({
      identity: spec.identity,
      bars,
      capabilities: capabilityList(spec, interrupts, this.msixPlacement),
      extendedCapabilities: spec.extendedCapabilities ?? [],
      interruptPin: interrupts.intx ? 1 : 0,
      hooks: spec.config,
    });
    this.configLayout = new ConfigLayout(this.config, spec.configRegisters);
    this.registerMaps = registerMapsOf(spec);
    this.msix = this.config.msix;
    this.irqs = new IrqState(
      {
        intx: interrupts.intx ? 1 : 0,
        msi: interrupts.msi ?? 0,
        msix: this.msixPlacement?.vectors ?? 0,
        err: interrupts.err ? 1 : 0,
        req: interrupts.req ? 1 : 0,
      },
      (index, vector) => this.firePending(index, vector),
      () => this.routingChanged(),
    );
    this.regions = buildRegions(spec, bars, this.config.size);
    this.unmodeled = new UnmodeledAccesses(registerMapRegions(spec));
    this.doorbellThreads = DoorbellThreads.of(this.regions, (m) => process.stderr.write(`[${this.name}] error: ${m}\n`));
    this.config.onChange((ev) => {
      if (ev.type === 'command') this.refirePending(IrqIndex.INTX);
      else if (ev.type === 'msi' || ev.type === 'msi-mask') this.refirePending(IrqIndex.MSI);
      else if (ev.type === 'msix') this.refirePending(IrqIndex.MSIX);
      else if (ev.type === 'flr') this.startConfigReset();
      this.routingChanged();
    });
    // Last: nothing after it may throw and leave a timer or a watch bound to a device never built.
    for (const r of this.regions) for (const w of r?.watches ?? []) w.attach(this, r!);
    for (const timer of spec.timers ?? []) timer.attach(this);
  }

  /**
   * @internal A client connected: watched memory is polled from now on,
   * with a busy-poll window of `pollIdleMs` after each write (0: never).
   */
  startWatching(pollIdleMs: number, log: Logger): void {
    const adopted = this.adoptedMemory;
    this.adoptedMemory = new Set();
    for (const r of this.regions) for (const w of r?.watches ?? []) w.start(pollIdleMs, log, adopted.has(r!.index));
  }

  /**
   * @internal Under `--isolate`, a successor serves the memfd of region
   * `index` its predecessor served (`fd`, which the client maps and
   * stores into) instead of its own: mapped over the same addresses, so
   * every view of the region's memory reaches it. The next client's
   * watches over it report what no process saw (see MemoryWatch.start).
   * Takes `fd`.
   * @throws RangeError when the region has no memory or `fd` is not of its size
   */
  adoptRegionMemory(index: number, fd: number): void {
    const r = this.regions[index];
    if (!r) throw new RangeError(`${this.name}: no region ${index}`);
    adoptMemory(r, fd);
    this.adoptedMemory.add(index);
  }

  /**
   * @internal Stops looking at watched memory (true), the words left as
   * they are, or looks again (false) and scans once now: what was stored
   * meanwhile is seen. Under `--isolate`: a child handing the device over,
   * and a successor until it recovered the device's state.
   */
  holdWatching(held: boolean): void {
    for (const r of this.regions) for (const w of r?.watches ?? []) w.hold(held);
    if (!held) native.watchScan();
  }

  /** @internal The client left: watched memory is no longer polled. */
  stopWatching(): void {
    for (const r of this.regions) for (const w of r?.watches ?? []) w.stop();
  }

  /** Set while a client is connected. */
  get link(): DeviceLink | undefined {
    return this.currentLink;
  }

  set link(link: DeviceLink | undefined) {
    this.currentLink = link;
    if (link) this.lastDma = link.dma;
  }

  /**
   * Tells the developer of the guest's driver, in the serving server's log
   * (warn level), what the device refused or failed: a malformed request,
   * a command that completed with an error. Rate-limited per device (5 per
   * 10 s, the rest counted), so a driver looping on its mistake cannot
   * flood the log. Nothing is logged while no client is connected.
   */
  warnDriver(message: string): void {
    this.driverWarnings.warn(message);
  }

  /**
   * Revokes the guest memory that I/O a reset abandoned still holds
   * (pinned writable DMA regions of the connected client, or of the last
   * one after a disconnect): see {@link DmaAccess.revokePinned}. Undefined
   * when no client ever connected.
   */
  revokePinnedDma(): ReturnType<DmaTable['revokePinned']> | undefined {
    return this.lastDma?.revokePinned();
  }

  /** True while a client is connected. */
  get connected(): boolean {
    return this.link !== undefined;
  }

  /**
   * Raises interrupt `vector` in the active mode (MSI-X, MSI or INTx, as the
   * client configured), honouring masks: a masked vector is left pending
   * and fires when unmasked. While quiesced (migration) it is deferred.
   */
  trigger(vector = 0): TriggerResult {
    const index = this.irqs.activeIndex;
    if (index < 0) {
      return this.irqs.count(IrqIndex.INTX) > 0 && vector === 0 ? this.triggerIrq(IrqIndex.INTX, 0) : 'no-eventfd';
    }
    return this.triggerIrq(index, vector);
  }

  /** Raises a vector of a specific IRQ index (e.g. ERR or REQ). */
  triggerIrq(index: number, vector: number): TriggerResult {
    if (this.link?.quiesced) {
      this.irqs.checkRange(index, vector, 1);
      this.deferred.push({ index, vector });
      return 'pending';
    }
    return this.raise(index, vector);
  }

  /** Replays interrupts deferred while quiesced, then sends those unmasked meanwhile. */
  resumeInterrupts(): void {
    const list = this.deferred;
    this.deferred = [];
    for (const t of list) this.raise(t.index, t.vector);
    for (const index of [IrqIndex.INTX, IrqIndex.MSI, IrqIndex.MSIX]) this.refirePending(index);
    this.routingChanged();
  }

  /**
   * Whether a vector was raised while masked and waits to be sent: the
   * MSI-X PBA or MSI pending register the guest reads, or INTx's bit.
   */
  irqPending(index: number, vector: number): boolean {
    if (index === IrqIndex.MSIX) return this.msix?.isPending(vector) ?? false;
    if (index === IrqIndex.MSI) return (((this.config.msiState()?.pending ?? 0) >>> vector) & 1) !== 0;
    if (index === IrqIndex.INTX) return this.irqs.isIntxPending;
    return false;
  }

  /**
   * Writes the MSI-X table (a client's BAR access) and sends pending
   * vectors whose entries it unmasked.
   */
  writeMsixTable(offset: number, data: Uint8Array): void {
    const { first, last } = this.msix!.write(offset, data);
    for (let v = first; v <= last; v++) this.firePending(IrqIndex.MSIX, v);
    this.routingChanged();
  }

  /**
   * The eventfd that raising `vector` of `index` would signal right now,
   * or -1 when raising it would do anything else (masked: left pending;
   * quiesced: deferred; another mode active; no eventfd). Code that
   * signals from another thread (queue workers) may write this eventfd
   * directly until {@link onInterruptRouting} reports a change; otherwise
   * it must go through {@link triggerIrq}.
   */
  directEventfd(index: number, vector: number): number {
    if (this.link?.quiesced || this.irqs.activeIndex !== index) return -1;
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.irqs.count(index) || index === IrqIndex.INTX) return -1;
    if (this.isMasked(index, vector)) return -1;
    return this.irqs.eventfd(index, vector);
  }

  /**
   * Calls `listener` (synchronously) after anything that may change what
   * {@link directEventfd} returns: SET_IRQS, config-space mask and enable
   * bits, MSI-X table writes, reset, resuming from quiesce. Returns an
   * unsubscribe function.
   */
  onInterruptRouting(listener: () => void): () => void {
    this.routingListeners.add(listener);
    return () => this.routingListeners.delete(listener);
  }

  private routingChanged(): void {
    for (const l of this.routingListeners) l();
  }

  /** Interrupts deferred while quiesced, oldest first (read only). */
  deferredInterrupts(): readonly { index: number; vector: number }[] {
    return this.deferred;
  }

  /**
   * Whether the device may master the bus now: Bus Master Enable is set in
   * the command register, or the device's DMA policy does not require it.
   * Every DMA path (views, copies, messages, worker threads) asks this.
   */
  get busMasterAllowed(): boolean {
    return !this.requiresBusMaster || (this.config.command & PciCommand.MASTER) !== 0;
  }

  /** DMA into client memory. Throws ENOTCONN without a client. */
  get dma(): GatedDmaAccess {
    if (!this.link) throw new DeviceError(Errno.ENOTCONN, `${this.name}: no client, no DMA`);
    return this.link.dma;
  }

  /** The shared memory of a memory-backed region. */
  regionMemory(index: number): Uint8Array {
    const m = this.regions[index]?.memory;
    if (!m) throw new DeviceError(Errno.EINVAL, `${this.name}: region ${index} has no memory`);
    return m.bytes;
  }

  /** Back to power-on state: config space, MSI-X, register maps, interrupts, the device's own hook. */
  async reset(reason: ResetReason): Promise<void> {
    this.config.reset();
    for (const { map } of this.registerMaps) map.reset();
    this.deferred = [];
    for (const listener of this.resetListeners) listener();
    // The client owns its IRQ configuration and re-sends it after a reset.
    this.irqs.clearState();
    this.doorbellThreads?.threads.revive();
    await this.spec.onReset?.(reason, this);
  }

  /**
   * Runs `listener` when migration stops the device (`true`: interrupts are
   * deferred and DMA held from now on) and when it lets it run again
   * (`false`). Device timers use it to pause and resume.
   */
  addQuiesceListener(listener: (quiesced: boolean) => void): void {
    this.quiesceListeners.push(listener);
  }

  /** @internal The connection's quiesced flag changed (migration stopped or resumed the device). */
  quiesceChanged(quiesced: boolean): void {
    for (const listener of this.quiesceListeners) listener(quiesced);
  }

  /** Runs `listener` at the start of every reset (client request, FLR, disconnect, migration). */
  addResetListener(listener: () => void): void {
    this.resetListeners.push(listener);
  }

  /**
   * What the config-space write just served started and its reply must
   * wait for (a Function Level Reset, or work a config hook passed to
   * {@link delayConfigReply}), if anything.
   */
  takeConfigReset(): Promise<void> | undefined {
    const p = this.configWait;
    this.configWait = undefined;
    return p;
  }

  /**
   * Called from a config hook: the reply to the config write being served
   * waits for `work` (a device reset reached through a capability window).
   */
  delayConfigReply(work: Promise<void>): void {
    // Handled here so a config write nobody awaits cannot become an unhandled rejection.
    work.catch(() => undefined);
    const before = this.configWait;
    this.configWait = before ? Promise.all([before, work]).then(() => undefined) : work;
  }

  /** FLR, as VFIO does it: device reset hook, IRQ state cleared, migration back to RUNNING. */
  private startConfigReset(): void {
    this.delayConfigReply(this.reset('flr'));
  }

  /**
   * The one path that raises a vector: masked by the client (SET_IRQS,
   * INTx automask) or by config space, it is left pending where the guest
   * sees it; otherwise its eventfd is signalled.
   */
  private raise(index: number, vector: number): TriggerResult {
    this.irqs.checkVector(index, vector);
    if (this.isMasked(index, vector)) {
      this.setIrqPending(index, vector, true);
      return 'pending';
    }
    return this.irqs.signal(index, vector);
  }

  /** Sends a pending vector that is no longer masked (not while quiesced: resume does it). */
  private firePending(index: number, vector: number): void {
    if (this.link?.quiesced || !this.irqPending(index, vector) || this.isMasked(index, vector)) return;
    this.setIrqPending(index, vector, false);
    this.irqs.signal(index, vector);
  }

  /** Sends every pending vector of `index` that is no longer masked. */
  private refirePending(index: number): void {
    for (let v = 0; v < this.irqs.count(index); v++) this.firePending(index, v);
  }

  private setIrqPending(index: number, vector: number, pending: boolean): void {
    if (index === IrqIndex.MSIX) this.msix?.setPending(vector, pending);
    else if (index === IrqIndex.MSI) this.config.setMsiPending(vector, pending);
    else if (index === IrqIndex.INTX) this.irqs.setIntxPending(pending);
  }

  /** Masked by the client (SET_IRQS, INTx automask) or by config space. */
  private isMasked(index: number, vector: number): boolean {
    return this.irqs.isMasked(index, vector) || this.configMasks(index, vector);
  }

  private configMasks(index: number, vector: number): boolean {
    if (index === IrqIndex.INTX) return this.config.intxDisabled;
    if (index === IrqIndex.MSIX && this.config.msixEnabled) {
      // QEMU keeps the MSI-X table itself and never writes ours: only a
      // table the client wrote to carries meaningful mask bits.
      return this.config.msixFunctionMasked || (this.msix!.touched && this.msix!.isVectorMasked(vector));
    }
    if (index === IrqIndex.MSI) {
      const msi = this.config.msiState();
      return msi !== undefined && msi.perVectorMask && (msi.mask & (1 << vector)) !== 0;
    }
    return false;
  }

  /** Releases the device's own resources (timers, region memfds), then the spec's (onDispose). */
  dispose(): void {
    for (const timer of this.spec.timers ?? []) if (timer.device === this) timer.detach();
    for (const r of this.regions) for (const w of r?.watches ?? []) if (w.servedDevice === this) w.detach();
    for (const r of this.regions) if (r?.memory) closeMemory(r);
    this.doorbellThreads?.close();
    this.spec.onDispose?.(this);
  }
}

/** Every watch the spec's BARs and regions list. */
function watchesOf(spec: DeviceSpec): MemoryWatch[] {
  const regions = [...Object.values(spec.bars ?? {}), ...Object.values(spec.regions ?? {})];
  return regions.flatMap((r) => [...(r?.watches ?? [])]);
}

function closeMemory(r: Region): void {
  // The mapping itself goes with the ArrayBuffer; the fd is ours to close.
  native.close(r.memory!.fd);
}
