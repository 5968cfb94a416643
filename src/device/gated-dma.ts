/**
 * Device DMA that migration can hold: while the device is stopped (STOP,
 * STOP_COPY, RESUMING, and the P2P states) new DMA waits (async copies) or
 * is refused with EBUSY (zero-copy views, which cannot wait), and stopping
 * waits for the copies already in flight to finish.
 *
 * It also offers DMA forced through DMA_READ / DMA_WRITE messages, even
 * where the client shared an fd, for devices (and tests) that want the
 * message path.
 */
import { DmaAccess, type DmaMessenger } from './dma-access.js';
import type { DmaSegment, DmaTable } from './dma.js';
import { DeviceError, Errno } from './errors.js';

/** One mapped DMA region, as a device sees it. */
export interface DmaRegionInfo {
  iova: number;
  size: number;
  /** DMA_READ | DMA_WRITE rights granted by the client. */
  prot: number;
  /** True when the memory is mapped zero-copy (a sealed fd): views() work. */
  direct: boolean;
  /**
   * True when the client shared an fd: read() and write() reach the memory
   * without messages (through the mapping when `direct`, else by
   * pread/pwrite on an fd that could shrink).
   */
  shared: boolean;
}

/** Open or held, with a count of operations in flight. */
export class DmaGate {
  private held = false;
  private inflight = 0;
  private openWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];

  /** True while DMA is held. */
  get isHeld(): boolean {
    return this.held;
  }

  /** Operations in flight. */
  get busy(): number {
    return this.inflight;
  }

  /**
   * Holds DMA and waits (at most `timeoutMs`) for operations in flight.
   * Resolves true when they all finished, false on timeout.
   */
  hold(timeoutMs: number): Promise<boolean> {
    this.held = true;
    if (this.inflight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  /** Lets DMA proceed; operations waiting for the gate start. */
  release(): void {
    this.held = false;
    const ws = this.openWaiters;
    this.openWaiters = [];
    for (const w of ws) w();
  }

  /** Throws EBUSY while held (for synchronous access). */
  check(): void {
    if (this.held) throw new DeviceError(Errno.EBUSY, 'DMA is held: the device is stopped for migration');
  }

  /** Runs `op` once the gate is open, counting it as in flight. */
  async run<T>(op: () => Promise<T>): Promise<T> {
    while (this.held) await new Promise<void>((r) => this.openWaiters.push(r));
    this.inflight++;
    try {
      return await op();
    } finally {
      if (--this.inflight === 0) {
        const ws = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of ws) w();
      }
    }
  }
}

/**
 * {@link DmaAccess} that migration can hold, plus message-only DMA. DMA
 * also needs Bus Master Enable: while the PCI command register's bit 2 is
 * clear, every access (views and messages alike) fails with EPERM, as a
 * PCI function may not master the bus then (unless the device's spec says
 * `requireBusMaster: false`: `busMaster` then always allows it).
 */
export class GatedDmaAccess extends DmaAccess {
  readonly gate = new DmaGate();

  /** @param busMaster whether the device may master the bus right now (PCI command bit 2, or its DMA policy). */
  constructor(
    table: DmaTable,
    messenger: DmaMessenger,
    private readonly busMaster: () => boolean = () => true,
  ) {
    super(table, messenger);
  }

  /** The client's DMA regions in IOVA order. */
  regions(): DmaRegionInfo[] {
    return this.table.list().map((r) => ({ iova: r.iova, size: r.size, prot: r.prot, direct: r.memory !== undefined, shared: r.memory !== undefined || r.fd !== undefined }));
  }

  override sgl(iova: number, length: number, write = false): DmaSegment[] {
    this.checkAccess();
    return super.sgl(iova, length, write);
  }

  /** Migration's hold (EBUSY) and Bus Master Enable (EPERM). */
  protected override checkAccess(): void {
    this.gate.check();
    this.checkBusMaster();
  }

  /** False while migration holds DMA or Bus Master Enable is clear (sgl() would throw). */
  override accessible(): boolean {
    return !this.gate.isHeld && this.busMaster();
  }

  /** False too while Bus Master Enable is clear (views() would fail). */
  override isDirect(iova: number, length: number): boolean {
    return this.busMaster() && super.isDirect(iova, length);
  }

  override read(iova: number, length: number): Promise<Buffer> {
    return this.gate.run(() => super.read(iova, length));
  }

  override write(iova: number, data: Uint8Array): Promise<void> {
    return this.gate.run(() => super.write(iova, data));
  }

  /**
   * Reads through DMA_READ messages only (never a mapping), in pieces of at
   * most the client's max_data_xfer_size.
   */
  messageRead(iova: number, length: number): Promise<Buffer> {
    return this.gate.run(async () => {
      this.checkBusMaster();
      super.sgl(iova, length, false);
      const out = Buffer.allocUnsafe(length);
      await this.readByMessage(iova, length, out, 0);
      return out;
    });
  }

  /** Writes through DMA_WRITE messages only, in pieces of at most max_data_xfer_size. */
  messageWrite(iova: number, data: Uint8Array): Promise<void> {
    return this.gate.run(async () => {
      this.checkBusMaster();
      super.sgl(iova, data.length, true);
      await this.writeByMessage(iova, data);
    });
  }

  private checkBusMaster(): void {
    if (!this.busMaster()) throw new DeviceError(Errno.EPERM, 'DMA refused: Bus Master Enable is clear in the PCI command register');
  }
}
