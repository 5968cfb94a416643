/**
 * Live migration of one device: performs the arcs of the v2 state machine
 * (migration-fsm.ts), keeps the device quiet while it is stopped, and
 * streams its state: the device's save output is cut into MIG_DATA_READ
 * replies of whatever size the client asks for, and MIG_DATA_WRITE chunks
 * go to its loader. The state survives reconnects only as far as the
 * device does: a reset (client request or disconnect) returns to RUNNING.
 */
import { MigrationState as S } from '../protocol/constants.js';
import type { Device } from '../device/device.js';
import { DeviceError, Errno, errnoOf } from '../device/errors.js';
import * as fsm from './fsm.js';
import type { GatedDmaAccess } from '../device/gated-dma.js';
import { bufferingLoader, defaultLimit, defaultLoader, saveDefault } from './default.js';
import type { MigrationData, MigrationLoader, MigrationSpec } from '../device/migration-spec.js';
import type { MaybePromise } from '../device/spec.js';

/** What migration needs from the connection driving it (the Session). */
export interface MigrationLink {
  /** Interrupts are deferred while true. */
  quiesced: boolean;
  readonly dma: GatedDmaAccess;
  readonly limits: { requestTimeoutMs: number };
}

/** Counters, for logs and tests. */
export interface MigrationStats {
  /** Bytes handed out by MIG_DATA_READ since the last saving session began. */
  bytesRead: number;
  /** Bytes taken by MIG_DATA_WRITE since RESUMING began. */
  bytesWritten: number;
  /** Arcs performed since the device was created. */
  arcs: number;
}

const MAX_CUSTOM_LOAD = 256 * 1024 * 1024;
/** Longest wait for device DMA in flight when stopping. */
const DRAIN_MS = 2000;

/** Pulls a device's migration data, chunk by chunk, across save calls. */
class OutStream {
  private pending: MaybePromise<MigrationData>[] = [];
  private it: Iterator<Uint8Array> | AsyncIterator<Uint8Array> | undefined;
  private head: Uint8Array | undefined;

  append(data: MaybePromise<MigrationData>): void {
    this.pending.push(data);
  }

  /** Up to `size` bytes; fewer only when every source appended so far is exhausted. */
  async read(size: number): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    let n = 0;
    while (n < size) {
      if (!this.head || this.head.length === 0) {
        this.head = await this.pull();
        if (!this.head) break;
      }
      const take = Math.min(size - n, this.head.length);
      parts.push(this.head.subarray(0, take));
      this.head = this.head.subarray(take);
      n += take;
    }
    if (parts.length === 1) return Buffer.from(parts[0]!.buffer, parts[0]!.byteOffset, parts[0]!.length);
    return Buffer.concat(parts, n);
  }

  /** Ends the session; lets a generator clean up. */
  async close(): Promise<void> {
    const it = this.it;
    this.it = undefined;
    this.pending = [];
    this.head = undefined;
    await it?.return?.();
  }

  private async pull(): Promise<Uint8Array | undefined> {
    for (;;) {
      if (!this.it) {
        if (this.pending.length === 0) return undefined;
        this.it = iteratorOf(await this.pending.shift()!);
      }
      const r = await this.it.next();
      if (r.done) {
        this.it = undefined;
        continue;
      }
      if (!(r.value instanceof Uint8Array)) throw new DeviceError(Errno.EIO, 'migration save produced something other than bytes');
      if (r.value.length > 0) return r.value;
    }
  }
}

function iteratorOf(d: MigrationData): Iterator<Uint8Array> | AsyncIterator<Uint8Array> {
  if (d instanceof Uint8Array) return [d][Symbol.iterator]();
  if (d && typeof d === 'object' && Symbol.asyncIterator in d) return (d as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  if (d && typeof d === 'object' && Symbol.iterator in d) return (d as Iterable<Uint8Array>)[Symbol.iterator]();
  throw new DeviceError(Errno.EIO, 'migration save returned neither bytes nor an iterable of bytes');
}

/** The migration state machine of one device. */
export class Migration {
  /** Current state. */
  state: S = S.RUNNING;
  readonly caps: fsm.MigrationCaps;
  readonly stats: MigrationStats = { bytesRead: 0, bytesWritten: 0, arcs: 0 };
  private out: OutStream | undefined;
  private sink: MigrationLoader | undefined;
  private link: MigrationLink | undefined;

  constructor(
    readonly device: Device,
    private readonly spec: MigrationSpec = {},
  ) {
    const saves = spec.save !== undefined;
    const loads = spec.load !== undefined || spec.loader !== undefined;
    if (saves !== loads) throw new RangeError('migration: give both save and load (or loader), or neither for the default');
    if (spec.savePreCopy && !spec.preCopy) throw new RangeError('migration: savePreCopy needs preCopy: true');
    this.caps = { preCopy: spec.preCopy === true, p2p: spec.p2p === true };
    device.addResetListener(() => this.reset());
  }

  /** VFIO_MIGRATION_* flags for the MIGRATION feature. */
  get flags(): number {
    return fsm.migrationFlags(this.caps);
  }

  /**
   * Moves to `target` along the state machine's path, one arc at a time.
   * EINVAL (state unchanged) when the request is not allowed; a failing arc
   * leaves the state where the path got to (ERROR when loading failed).
   */
  async setState(target: number, link: MigrationLink): Promise<void> {
    const steps = fsm.path(this.state, target, this.caps);
    if (!steps) {
      throw new DeviceError(Errno.EINVAL, `migration: ${fsm.stateName(this.state)} -> ${fsm.stateName(target)} is not allowed`);
    }
    this.link = link;
    for (const to of steps) await this.arc(this.state, to, link);
  }

  /** MIG_DATA_READ: up to `size` bytes; fewer means no more data for now. */
  async read(size: number): Promise<Buffer> {
    if (!fsm.isSaving(this.state) || !this.out) throw new DeviceError(Errno.EINVAL, `migration: no data to read in ${fsm.stateName(this.state)}`);
    try {
      const data = await this.out.read(size);
      this.stats.bytesRead += data.length;
      return data;
    } catch (e) {
      this.fail();
      throw e;
    }
  }

  /** MIG_DATA_WRITE: the next chunk of the RESUMING stream. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== S.RESUMING || !this.sink) throw new DeviceError(Errno.EINVAL, `migration: cannot take data in ${fsm.stateName(this.state)}`);
    try {
      await this.sink.write(chunk);
      this.stats.bytesWritten += chunk.length;
    } catch (e) {
      this.fail();
      throw e;
    }
  }

  /** Back to RUNNING with no data session (device reset or disconnect). */
  reset(): void {
    this.dropSession();
    this.state = S.RUNNING;
    const link = this.link;
    this.link = undefined;
    if (link) {
      link.dma.gate.release();
      link.quiesced = false;
    }
  }

  private fail(): void {
    this.dropSession();
    this.state = S.ERROR;
    if (this.link) {
      this.link.quiesced = true;
      void this.link.dma.gate.hold(0);
    }
  }

  /** Ends the saving or resuming session, if any, without waiting. */
  private dropSession(): void {
    void this.out?.close().catch(() => undefined);
    this.out = undefined;
    this.sink = undefined;
  }

  private async arc(from: S, to: S, link: MigrationLink): Promise<void> {
    const device = this.device;
    const gainIrq = fsm.mayInterrupt(to) && !fsm.mayInterrupt(from);
    const gainDma = fsm.mayDma(to) && !fsm.mayDma(from);
    const loseIrq = fsm.mayInterrupt(from) && !fsm.mayInterrupt(to);
    const loseDma = fsm.mayDma(from) && !fsm.mayDma(to);

    // Leaving RESUMING completes the load; a bad stream puts the device in ERROR.
    if (from === S.RESUMING) {
      const sink = this.sink;
      this.sink = undefined;
      try {
        if (!sink) throw new DeviceError(Errno.EINVAL, 'migration: no resuming session');
        await sink.end();
      } catch (e) {
        this.fail();
        // A loader that threw a plain Error found the data invalid.
        const errno = e instanceof DeviceError ? e.errno : errnoOf(e) === Errno.EIO ? Errno.EINVAL : errnoOf(e);
        throw new DeviceError(errno, `migration: loading failed: ${(e as Error).message}`);
      }
    }

    if (gainDma) link.dma.gate.release();
    if (gainIrq) link.quiesced = false;
    try {
      await this.spec.onTransition?.(from, to, device);
    } catch (e) {
      if (gainIrq) link.quiesced = true;
      if (gainDma) void link.dma.gate.hold(0);
      throw e;
    }
    if (gainIrq) device.resumeInterrupts();
    if (loseIrq) link.quiesced = true;
    // Waits for copies in flight; one stuck on an unresponsive client does not block the arc.
    if (loseDma) await link.dma.gate.hold(Math.min(DRAIN_MS, link.limits.requestTimeoutMs));

    if (fsm.isSaving(to) && !fsm.isSaving(from)) {
      const out = new OutStream();
      if (to === S.STOP_COPY) out.append(this.save());
      else if (this.spec.savePreCopy) out.append(this.spec.savePreCopy(device));
      else if (!this.spec.save) out.append(saveDefault(device));
      this.out = out;
      this.stats.bytesRead = 0;
    } else if (to === S.STOP_COPY) {
      this.out!.append(this.save());
    } else if (fsm.isSaving(from) && !fsm.isSaving(to)) {
      const out = this.out;
      this.out = undefined;
      await out?.close();
    }
    if (to === S.RESUMING) {
      this.sink = this.loader();
      this.stats.bytesWritten = 0;
    }
    this.state = to;
    this.stats.arcs++;
  }

  private save(): MaybePromise<MigrationData> {
    return this.spec.save ? this.spec.save(this.device) : saveDefault(this.device);
  }

  private loader(): MigrationLoader {
    const device = this.device;
    if (this.spec.loader) return this.spec.loader(device);
    const load = this.spec.load;
    if (load) return bufferingLoader(Math.max(MAX_CUSTOM_LOAD, defaultLimit(device)), (d) => load(d, device));
    return defaultLoader(device);
  }
}
