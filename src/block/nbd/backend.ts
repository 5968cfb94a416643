/**
 * A block backend on an NBD export. Requests go out as soon as they are
 * made, many at a time, split to the server's payload limit. If the
 * connection drops, requests without a reply wait while the backend
 * reconnects (with backoff, up to a deadline) and are then sent again;
 * requests that had their reply are done, so no acknowledged write is lost.
 * A server with a minimum block size gets only aligned requests: unaligned
 * edges are read, merged and written whole, under a lock on those blocks.
 */
import { BlockError, type BlockBackend, type BlockCapabilities, type BlockErrorCode } from '../backend.js';
import { byteLength, checkRange, checkWritable, SECTOR_SIZE } from '../checks.js';
import { InFlight } from '../inflight.js';
import { sliceScatter } from '../scatter.js';
import { NbdProtocolError } from './codec.js';
import { openConnection, type NbdConnection, type NbdRequest } from './connection.js';
import { NbdConnectError } from './errors.js';
import { Cmd, CmdFlag, NbdErrno, TxFlag } from './protocol.js';
import { RangeLocks } from './range-locks.js';
import { formatNbdAddress, parseNbdUri, type NbdAddress } from './uri.js';

/** How the backend reconnects after the server drops. */
export interface NbdReconnectOptions {
  /** Give up (failing the waiting requests with EIO) after this long without a connection. Default 30000 ms. */
  readonly timeoutMs?: number;
  /** First wait between attempts; it doubles up to `maxDelayMs`. Default 50 ms. */
  readonly delayMs?: number;
  /** Longest wait between attempts. Default 1000 ms. */
  readonly maxDelayMs?: number;
}

/** Options of {@link openNbdBackend}. */
export interface NbdBackendOptions {
  /** Refuse writes, discards and write-zeroes (EROFS) even if the export allows them. */
  readonly readOnly?: boolean;
  /** Limit on connecting plus the handshake, per attempt. Default 10000 ms. */
  readonly connectTimeoutMs?: number;
  readonly reconnect?: NbdReconnectOptions;
}

/** An NBD backend. */
export interface NbdBackend extends BlockBackend {
  /** The export, as a URI. */
  readonly uri: string;
  /** Times the backend has connected again after losing the server. */
  readonly reconnects: number;
  /** Requests sent and not yet answered (for tests and monitoring). */
  readonly inFlight: number;
  /** The server's minimum block size (1 if it states none); requests to it are aligned to it. */
  readonly minBlockSize: number;
  /** Every request goes over the network: always a Promise. */
  read(offset: number, buffers: readonly Uint8Array[]): Promise<void>;
  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): Promise<void>;
  flush(): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void>;
}

/** Discard and write-zeroes lengths are 32-bit on the wire; 1 GiB pieces keep well inside. */
const MAX_ZERO_PIECE = 1 << 30;

/**
 * Connects to an NBD export given as a URI (`nbd://host:port/export`,
 * `nbd+unix:///export?socket=/path`) or an address.
 *
 * Capabilities follow the export's transmission flags: flush, discard
 * (trim) and write-zeroes are there only if the server offers them; a
 * write with `fua` uses the FUA flag, or a flush where the server lacks it.
 * The capacity is the export's size rounded down to 512 bytes.
 *
 * @throws NbdUriError for a bad URI; NbdConnectError (a BlockError 'EIO')
 * when the server cannot be reached or refuses the export.
 *
 * @example
 * ```ts
 * const disk = await openNbdBackend('nbd+unix:///?socket=/tmp/nbd.sock');
 * await disk.write(0, [Buffer.alloc(4096, 1)], { fua: true });
 * await disk.close();
 * ```
 */
export async function openNbdBackend(target: string | NbdAddress, options: NbdBackendOptions = {}): Promise<NbdBackend> {
  const address = typeof target === 'string' ? parseNbdUri(target) : target;
  const disk = new NbdDisk(address, options);
  await disk.connectFirst();
  return disk;
}

class NbdDisk implements NbdBackend {
  readonly uri: string;
  reconnects = 0;
  size = 0;
  readOnly = false;
  capabilities: BlockCapabilities = { flush: false, discard: false, writeZeroes: false };
  private flags = 0;
  private maxPayload = 0;
  minBlockSize = 1;
  /** Serialises modifying requests that share a block, when minBlockSize > 1. */
  private readonly locks = new RangeLocks();
  private conn: NbdConnection | undefined;
  /** Requests waiting for a connection. */
  private waiting: NbdRequest[] = [];
  private reconnecting = false;
  private readonly inflight = new InFlight();
  private closing: Promise<void> | undefined;
  private readonly connectTimeoutMs: number;
  private readonly reconnectTimeoutMs: number;
  private readonly delayMs: number;
  private readonly maxDelayMs: number;

  constructor(
    private readonly address: NbdAddress,
    private readonly options: NbdBackendOptions,
  ) {
    this.uri = formatNbdAddress(address);
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.reconnectTimeoutMs = options.reconnect?.timeoutMs ?? 30_000;
    this.delayMs = options.reconnect?.delayMs ?? 50;
    this.maxDelayMs = options.reconnect?.maxDelayMs ?? 1000;
  }

  get inFlight(): number {
    return (this.conn?.inFlight ?? 0) + this.waiting.length;
  }

  async connectFirst(): Promise<void> {
    const conn = await openConnection(this.address, this.connectTimeoutMs, (r, e) => this.lost(conn, r, e));
    const { info } = conn;
    const size = info.size - (info.size % SECTOR_SIZE);
    if (size === 0) {
      await conn.disconnect();
      throw new NbdConnectError('refused', `${this.uri}: the export is smaller than ${SECTOR_SIZE} bytes`);
    }
    this.size = size;
    this.flags = info.flags;
    // A power of two up to 64 KiB when stated; anything else is ignored.
    const min = info.minBlock;
    this.minBlockSize = min > 1 && min <= 65536 && (min & (min - 1)) === 0 ? min : 1;
    const unit = Math.max(SECTOR_SIZE, this.minBlockSize);
    this.maxPayload = Math.max(unit, info.maxPayload - (info.maxPayload % unit));
    this.readOnly = this.options.readOnly === true || (info.flags & TxFlag.ReadOnly) !== 0;
    this.capabilities = {
      flush: (info.flags & TxFlag.SendFlush) !== 0,
      discard: (info.flags & TxFlag.SendTrim) !== 0,
      writeZeroes: (info.flags & TxFlag.SendWriteZeroes) !== 0,
    };
    this.conn = conn;
  }

  read(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    return this.inflight.run(async () => {
      const length = byteLength(buffers);
      checkRange(this.size, offset, length);
      if (this.aligned(offset, length)) return this.readPlain(offset, buffers, length);
      // Read the whole blocks, hand over the part asked for.
      const [a0, a1] = this.expand(offset, length);
      const whole = new Uint8Array(a1 - a0);
      await this.readPlain(a0, [whole], whole.byteLength);
      let at = offset - a0;
      for (const b of buffers) {
        b.set(whole.subarray(at, at + b.byteLength));
        at += b.byteLength;
      }
    });
  }

  write(offset: number, buffers: readonly Uint8Array[], options?: { fua?: boolean }): Promise<void> {
    return this.inflight.run(async () => {
      checkWritable(this.readOnly, 'write');
      const length = byteLength(buffers);
      checkRange(this.size, offset, length);
      if (length === 0) return;
      const fua = options?.fua === true;
      const wireFua = fua && (this.flags & TxFlag.SendFua) !== 0;
      await this.modifying(offset, length, () => this.writeMerged(offset, buffers, length, wireFua ? CmdFlag.Fua : 0));
      if (fua && !wireFua && this.capabilities.flush) await this.send(Cmd.Flush, 0, 0, 0);
    });
  }

  flush(): Promise<void> {
    return this.inflight.run(async () => {
      // Without NBD_FLAG_SEND_FLUSH the server has no cache to flush.
      if (this.capabilities.flush) await this.send(Cmd.Flush, 0, 0, 0);
    });
  }

  discard(offset: number, length: number): Promise<void> {
    return this.inflight.run(async () => {
      checkWritable(this.readOnly, 'discard');
      checkRange(this.size, offset, length);
      if (!this.capabilities.discard) throw new BlockError('ENOTSUP', `${this.uri}: the server does not offer trim`);
      await this.zeroLike(offset, length, (at, n) => this.send(Cmd.Trim, 0, at, n));
    });
  }

  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void> {
    return this.inflight.run(async () => {
      checkWritable(this.readOnly, 'write-zeroes');
      checkRange(this.size, offset, length);
      if (!this.capabilities.writeZeroes) throw new BlockError('ENOTSUP', `${this.uri}: the server does not offer write-zeroes`);
      const flags = options?.unmap === true ? 0 : CmdFlag.NoHole;
      await this.zeroLike(offset, length, (at, n) => this.send(Cmd.WriteZeroes, flags, at, n));
    });
  }

  close(): Promise<void> {
    this.closing ??= this.inflight.drain().then(async () => {
      const conn = this.conn;
      this.conn = undefined;
      await conn?.disconnect();
    });
    return this.closing;
  }

  private aligned(offset: number, length: number): boolean {
    const m = this.minBlockSize;
    return m === 1 || (offset % m === 0 && length % m === 0);
  }

  /** [offset, offset + length) widened to whole blocks. */
  private expand(offset: number, length: number): [number, number] {
    const m = this.minBlockSize;
    return [offset - (offset % m), Math.ceil((offset + length) / m) * m];
  }

  private readPlain(offset: number, buffers: readonly Uint8Array[], length: number): Promise<void> {
    return this.pieces(offset, length, this.maxPayload, (at, n) => this.send(Cmd.Read, 0, at, n, sliceScatter(buffers, at - offset, n)));
  }

  /** Runs a modifying request; with a minimum block size, under a lock on the blocks it touches. */
  private async modifying(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    if (this.minBlockSize === 1) return op();
    const [a0, a1] = this.expand(offset, length);
    const release = await this.locks.acquire(a0, a1);
    try {
      await op();
    } finally {
      release();
    }
  }

  /**
   * Writes `buffers` at `offset`, widened to whole blocks with the current
   * contents of the partial first and last block (the caller holds their lock).
   */
  private async writeMerged(offset: number, buffers: readonly Uint8Array[], length: number, flags: number): Promise<void> {
    let list: readonly Uint8Array[] = buffers;
    let start = offset;
    let total = length;
    if (!this.aligned(offset, length)) {
      const m = this.minBlockSize;
      const [a0, a1] = this.expand(offset, length);
      const head = offset - a0;
      const tail = a1 - (offset + length);
      const first = head > 0 ? new Uint8Array(m) : undefined;
      if (first) await this.readPlain(a0, [first], m);
      let last: Uint8Array | undefined;
      if (tail > 0) {
        if (first && a1 - m === a0) last = first;
        else {
          last = new Uint8Array(m);
          await this.readPlain(a1 - m, [last], m);
        }
      }
      list = [...(first ? [first.subarray(0, head)] : []), ...buffers, ...(last ? [last.subarray(m - tail)] : [])];
      start = a0;
      total = a1 - a0;
    }
    await this.pieces(start, total, this.maxPayload, (at, n) => this.send(Cmd.Write, flags, at, n, sliceScatter(list, at - start, n)));
  }

  /** Trim or write-zeroes: whole blocks go to `send`; partial edge blocks get zeros written into them. */
  private zeroLike(offset: number, length: number, send: (at: number, n: number) => Promise<void>): Promise<void> {
    if (length === 0) return Promise.resolve();
    return this.modifying(offset, length, async () => {
      const m = this.minBlockSize;
      const end = offset + length;
      const inner0 = Math.ceil(offset / m) * m;
      const inner1 = end - (end % m);
      if (inner0 >= inner1) return this.writeMerged(offset, [new Uint8Array(length)], length, 0);
      const all = [this.pieces(inner0, inner1 - inner0, MAX_ZERO_PIECE, send)];
      if (inner0 > offset) all.push(this.writeMerged(offset, [new Uint8Array(inner0 - offset)], inner0 - offset, 0));
      if (end > inner1) all.push(this.writeMerged(inner1, [new Uint8Array(end - inner1)], end - inner1, 0));
      await Promise.all(all);
    });
  }

  /** Runs `fn` on each piece of at most `max` bytes, all at once. */
  private async pieces(offset: number, length: number, max: number, fn: (at: number, n: number) => Promise<void>): Promise<void> {
    if (length === 0) return;
    if (length <= max) return fn(offset, length);
    const all: Promise<void>[] = [];
    for (let done = 0; done < length; done += max) all.push(fn(offset + done, Math.min(max, length - done)));
    await Promise.all(all);
  }

  private send(type: number, flags: number, offset: number, length: number, buffers?: readonly Uint8Array[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const request: NbdRequest = {
        type,
        flags,
        offset,
        length,
        buffers,
        settle: (error, message) => {
          if (error === 0) resolve();
          // The server is going away: drop this connection (its other
          // requests wait too) and send this one again after the reconnect.
          else if (error === NbdErrno.ESHUTDOWN) {
            this.conn?.destroy(new Error('the server is shutting down'));
            this.enqueue(request);
          }
          else reject(nbdError(error, `${commandName(type)} ${offset}+${length}`, message));
        },
      };
      this.enqueue(request);
    });
  }

  private enqueue(r: NbdRequest): void {
    if (this.conn) this.conn.submit(r);
    else {
      this.waiting.push(r);
      this.reconnect();
    }
  }

  /**
   * The connection ended: its unanswered requests wait for the next one,
   * unless the server broke the protocol (sending them again could loop).
   */
  private lost(conn: NbdConnection | undefined, unreplied: NbdRequest[], reason: Error): void {
    if (reason instanceof NbdProtocolError) {
      for (const r of unreplied) r.settle(NbdErrno.EIO, `${this.uri}: ${reason.message}`);
      unreplied = [];
    }
    if (conn !== undefined && this.conn !== conn && this.conn !== undefined) {
      // A stale connection: pass its requests to the live one.
      for (const r of unreplied) this.conn.submit(r);
      return;
    }
    this.conn = undefined;
    this.waiting.push(...unreplied);
    if (this.closing === undefined || this.waiting.length > 0) this.reconnect();
  }

  /** Connects again with backoff until the deadline; then sends what waited. */
  private reconnect(): void {
    if (this.reconnecting || this.conn) return;
    this.reconnecting = true;
    const deadline = Date.now() + this.reconnectTimeoutMs;
    let delay = this.delayMs;
    const attempt = async (): Promise<void> => {
      for (;;) {
        if (this.closing !== undefined && this.waiting.length === 0) return;
        let conn: NbdConnection | undefined;
        try {
          conn = await openConnection(this.address, Math.min(this.connectTimeoutMs, Math.max(1, deadline - Date.now())), (r, e) => this.lost(conn, r, e));
        } catch (e) {
          const err = e as NbdConnectError;
          if (err.failure !== 'connect' || Date.now() + delay > deadline) {
            const why = err.failure === 'connect' ? `no connection to ${this.uri} for ${this.reconnectTimeoutMs} ms: ${err.message}` : err.message;
            this.failWaiting(new BlockError('EIO', why));
            return;
          }
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, this.maxDelayMs);
          continue;
        }
        if (conn.info.size - (conn.info.size % SECTOR_SIZE) !== this.size) {
          await conn.disconnect();
          this.failWaiting(new BlockError('EIO', `${this.uri} changed size while reconnecting (${this.size} -> ${conn.info.size})`));
          return;
        }
        this.reconnects++;
        this.conn = conn;
        for (const r of this.waiting.splice(0)) conn.submit(r);
        return;
      }
    };
    void attempt().finally(() => {
      this.reconnecting = false;
    });
  }

  private failWaiting(e: BlockError): void {
    for (const r of this.waiting.splice(0)) r.settle(NbdErrno.EIO, e.message);
  }
}

function commandName(type: number): string {
  return ({ [Cmd.Read]: 'read', [Cmd.Write]: 'write', [Cmd.Flush]: 'flush', [Cmd.Trim]: 'trim', [Cmd.WriteZeroes]: 'write-zeroes' } as Record<number, string>)[type] ?? `command ${type}`;
}

/** Maps an NBD error reply to a block error. */
function nbdError(error: number, what: string, message?: string): BlockError {
  const codes: Record<number, BlockErrorCode> = {
    [NbdErrno.EPERM]: 'EROFS',
    [NbdErrno.ENOSPC]: 'ENOSPC',
    [NbdErrno.ENOTSUP]: 'ENOTSUP',
    [NbdErrno.EOVERFLOW]: 'ERANGE',
  };
  const names: Record<number, string> = Object.fromEntries(Object.entries(NbdErrno).map(([k, v]) => [v, k]));
  const detail = message ? `: ${message}` : '';
  return new BlockError(codes[error] ?? 'EIO', `${what}: the NBD server answered ${names[error] ?? `error ${error}`}${detail}`);
}
