/**
 * Guest memory for a device program. Memory muser itself maps zero-copy
 * (an fd that cannot shrink) is handed to the program too (MAP, with a dup
 * of the fd), so it reads and writes it without a round trip; the region
 * stays pinned here until the program confirms it let go (UNMAP's reply),
 * so the client's DMA_UNMAP is answered only after that. Everything else
 * the program reaches by DMA_READ / DMA_WRITE, served through device.dma
 * with all its rules. DMA_ALLOWED tells the program when it may use its
 * mappings (Bus Master Enable), and its DIRTY reports feed the dirty log.
 */
import type { Device } from '../device/device.js';
import type { DmaRegion, DmaTableObserver } from '../device/dma.js';
import { DeviceError, Errno, errnoOf } from '../device/errors.js';
import type { Logger } from '../device/logger.js';
import type { ProgramConnection } from './connection.js';
import { decodeDirty, decodeDmaRead, decodeDmaWrite, decodeEmpty, json, Kind, u32 } from './wire.js';

export class ProgramMemory {
  /** Regions the program was given, and the release of the pin each holds. */
  private readonly handedOver = new Map<DmaRegion, () => void>();
  private unsubscribe: (() => void) | undefined;
  /** What DMA_ALLOWED last said (undefined: nothing yet on this connection). */
  private allowed: boolean | undefined;

  constructor(
    private readonly conn: ProgramConnection,
    private readonly device: Device,
    private readonly log: Logger,
  ) {}

  /** A client connected: follow its DMA maps. */
  connect(): void {
    this.disconnect();
    const observer: DmaTableObserver = {
      added: (region, fd) => this.handOver(region, fd),
      removed: (region) => this.takeBack(region),
      sync: () => this.sync(),
    };
    this.unsubscribe = this.device.dma.observe(observer);
    this.allowed = undefined;
    this.updateAllowed();
  }

  /** The client left: stop following (its regions were taken back already). */
  disconnect(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const release of this.handedOver.values()) release();
    this.handedOver.clear();
    this.allowed = undefined;
  }

  /** Sends DMA_ALLOWED when whether the device may master the bus changed. */
  updateAllowed(): void {
    const link = this.device.link;
    if (!link) return;
    const now = link.dma.accessible();
    if (now === this.allowed) return;
    this.allowed = now;
    this.conn.send(Kind.DMA_ALLOWED, u32(now ? 1 : 0));
  }

  /** Serves the program's DMA_READ / DMA_WRITE. */
  async serve(kind: number, id: number, payload: Buffer): Promise<void> {
    try {
      if (!this.device.link) throw new DeviceError(Errno.ENOTCONN, 'no client is connected: no DMA');
      if (kind === Kind.DMA_READ) {
        const { iova, length } = decodeDmaRead(payload);
        this.conn.reply(id, kind, await this.device.dma.read(iova, length));
      } else {
        const { iova, data } = decodeDmaWrite(payload);
        await this.device.dma.write(iova, data);
        this.conn.reply(id, kind);
      }
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      this.log.debug(`device program's DMA refused: ${message}`);
      this.conn.replyError(id, kind, errnoOf(e), message);
    }
  }

  /** The program's DIRTY: writes through its mappings, for the dirty log. */
  dirty(payload: Buffer): void {
    const ranges = decodeDirty(payload);
    if (!this.device.link) return;
    for (let i = 0; i < ranges.length; i += 2) this.device.dma.markDirty(ranges[i], ranges[i + 1]);
  }

  private handOver(region: DmaRegion, fd: number | undefined): void {
    // Only memory muser maps itself: what may shrink would SIGBUS the program as it would us.
    if (fd === undefined || region.memory === undefined || this.conn.broken !== undefined) return;
    this.conn.send(Kind.MAP, json({ iova: region.iova, size: region.size, offset: region.offset, prot: region.prot }), [fd]);
    this.handedOver.set(region, this.device.dma.pinRegion(region));
  }

  private takeBack(region: DmaRegion): void {
    const release = this.handedOver.get(region);
    if (!release) return;
    this.handedOver.delete(region);
    const what = `UNMAP of 0x${region.iova.toString(16)}+0x${region.size.toString(16)}`;
    // A program that does not answer is stopped by the time limit: the pin goes either way.
    this.conn.call(Kind.UNMAP, json({ iova: region.iova, size: region.size }), what, decodeEmpty('UNMAP')).catch(() => undefined).finally(release);
  }

  /** Before a dirty-page report: the program's DIRTY for every write so far has arrived. */
  private async sync(): Promise<void> {
    if (this.handedOver.size === 0 || this.conn.broken !== undefined) return;
    await this.conn.call(Kind.SYNC, undefined, 'SYNC', decodeEmpty('SYNC')).catch(() => undefined);
  }
}
