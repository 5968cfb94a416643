/**
 * A RAM disk. Sparse: storage is allocated in chunks on first write, so a
 * large disk costs nothing until written, and discard frees whole chunks.
 */
import { type BlockBackend, type BlockCapabilities } from './backend.js';
import { byteLength, checkCapacity, checkRange, checkWritable } from './checks.js';
import { InFlight } from './inflight.js';

/** Options of {@link ramBackend}. */
export interface RamBackendOptions {
  /** Refuse writes, discards and write-zeroes (EROFS). */
  readonly readOnly?: boolean;
}

/** A RAM backend, with a view of how much memory it holds. */
export interface RamBackend extends BlockBackend {
  /** Bytes of memory currently allocated for data (whole chunks). */
  readonly allocatedBytes: number;
}

/** Allocation granule: large enough to keep the map small, small enough that a few scattered writes stay cheap. */
const CHUNK = 64 * 1024;

/** Chunk slots per page of the chunk table. */
const PAGE_SLOTS = 1024;
/** Pages the chunk table lists up front (512 KiB of slots, 4 TiB of disk); beyond, the page list grows as written. */
const PAGES_UP_FRONT = 1 << 16;

/**
 * The disk's chunks by index: pages of slots, each page made when a chunk
 * in it is first written. An array lookup per chunk rather than a Map's
 * hash (this is on the path of every request), and a sparse disk costs a
 * slot per page, not per chunk.
 */
class ChunkTable {
  private pages: ((Uint8Array | undefined)[] | undefined)[];
  /** Chunks held. */
  size = 0;

  constructor(private readonly chunks: number) {
    this.pages = ChunkTable.emptyPages(chunks);
  }

  private static emptyPages(chunks: number): ((Uint8Array | undefined)[] | undefined)[] {
    const pages = Math.ceil(chunks / PAGE_SLOTS);
    return pages <= PAGES_UP_FRONT ? new Array<undefined>(pages).fill(undefined) : [];
  }

  get(index: number): Uint8Array | undefined {
    const page = this.pages[Math.floor(index / PAGE_SLOTS)];
    return page === undefined ? undefined : page[index % PAGE_SLOTS];
  }

  set(index: number, chunk: Uint8Array): void {
    const p = Math.floor(index / PAGE_SLOTS);
    const page = (this.pages[p] ??= new Array<undefined>(PAGE_SLOTS).fill(undefined));
    if (page[index % PAGE_SLOTS] === undefined) this.size++;
    page[index % PAGE_SLOTS] = chunk;
  }

  delete(index: number): void {
    const page = this.pages[Math.floor(index / PAGE_SLOTS)];
    if (page === undefined || page[index % PAGE_SLOTS] === undefined) return;
    page[index % PAGE_SLOTS] = undefined;
    this.size--;
  }

  clear(): void {
    // A new list, not fill(): a list grown as written may be millions of slots long (a sparse 4 PiB disk: 2^26).
    this.pages = ChunkTable.emptyPages(this.chunks);
    this.size = 0;
  }
}

/**
 * Creates a RAM disk of `size` bytes (a positive multiple of 512), reading
 * as zeros until written. Every request finishes at once (no Promise).
 *
 * @example
 * ```ts
 * const disk = ramBackend(1 << 30); // 1 GiB, no memory used yet
 * await disk.write(4096, [Buffer.from('hello')]);
 * ```
 */
export function ramBackend(size: number, options: RamBackendOptions = {}): RamBackend {
  checkCapacity(size);
  return new Ram(size, options.readOnly === true);
}

class Ram implements RamBackend {
  readonly capabilities: BlockCapabilities = { flush: true, discard: true, writeZeroes: true };
  private readonly chunks: ChunkTable;
  private readonly inflight = new InFlight();

  constructor(
    readonly size: number,
    readonly readOnly: boolean,
  ) {
    this.chunks = new ChunkTable(Math.ceil(size / CHUNK));
  }

  get allocatedBytes(): number {
    return this.chunks.size * CHUNK;
  }

  /** Always at once: a RAM disk never waits. */
  read(offset: number, buffers: readonly Uint8Array[]): void {
    this.inflight.checkOpen();
    checkRange(this.size, offset, byteLength(buffers));
    let pos = offset;
    for (const buf of buffers) {
      // Chunk by chunk, without a callback: this is the per-request hot path.
      for (let done = 0; done < buf.length; ) {
        const index = Math.floor((pos + done) / CHUNK);
        const at = pos + done - index * CHUNK;
        const len = Math.min(CHUNK - at, buf.length - done);
        const chunk = this.chunks.get(index);
        if (chunk) buf.set(len === CHUNK ? chunk : chunk.subarray(at, at + len), done);
        else buf.fill(0, done, done + len);
        done += len;
      }
      pos += buf.length;
    }
  }

  write(offset: number, buffers: readonly Uint8Array[]): void {
    this.inflight.checkOpen();
    checkWritable(this.readOnly, 'write');
    checkRange(this.size, offset, byteLength(buffers));
    let pos = offset;
    for (const buf of buffers) {
      for (let done = 0; done < buf.length; ) {
        const index = Math.floor((pos + done) / CHUNK);
        const at = pos + done - index * CHUNK;
        const len = Math.min(CHUNK - at, buf.length - done);
        let chunk = this.chunks.get(index);
        if (!chunk) {
          chunk = new Uint8Array(CHUNK);
          this.chunks.set(index, chunk);
        }
        chunk.set(len === buf.length ? buf : buf.subarray(done, done + len), at);
        done += len;
      }
      pos += buf.length;
    }
  }

  /** Memory is as durable as it gets; nothing to do. */
  flush(): void {
    this.inflight.checkOpen();
  }

  discard(offset: number, length: number): void {
    this.zero('discard', offset, length);
  }

  writeZeroes(offset: number, length: number): void {
    this.zero('write-zeroes', offset, length);
  }

  close(): Promise<void> {
    return this.inflight.drain().then(() => this.chunks.clear());
  }

  /** Zeroes a range: whole chunks are freed, partial ones cleared in place. */
  private zero(what: string, offset: number, length: number): void {
    this.inflight.checkOpen();
    checkWritable(this.readOnly, what);
    checkRange(this.size, offset, length);
    this.forEachPiece(offset, length, (chunk, at, len, _done, index) => {
      if (!chunk) return;
      if (len === CHUNK) this.chunks.delete(index);
      else chunk.fill(0, at, at + len);
    });
  }

  /** Calls `fn` for each chunk-sized piece of [offset, offset + length). */
  private forEachPiece(
    offset: number,
    length: number,
    fn: (chunk: Uint8Array | undefined, at: number, len: number, done: number, index: number) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / CHUNK);
      const at = pos - index * CHUNK;
      const len = Math.min(CHUNK - at, length - done);
      fn(this.chunks.get(index), at, len, done, index);
      done += len;
    }
  }
}
