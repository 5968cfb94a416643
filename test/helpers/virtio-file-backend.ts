/**
 * A minimal file BlockBackend for the virtio tests that need a disk two
 * processes share (live migration between processes). Reads and writes go
 * through the libuv threadpool straight into the buffers it is given, which
 * for virtio-blk are pinned views of guest memory. (The real file backend
 * lives in src/block/.)
 */
import { open, type FileHandle } from 'node:fs/promises';
import { BlockError, type BlockBackend, type BlockCapabilities } from '../../src/block/backend.js';

export class TestFileBackend implements BlockBackend {
  readonly capabilities: BlockCapabilities = { flush: true, discard: false, writeZeroes: false };
  readonly readOnly = false;

  private constructor(
    private readonly file: FileHandle,
    readonly size: number,
  ) {}

  /** Opens (creating if needed) a file of `size` bytes. */
  static async open(path: string, size: number): Promise<TestFileBackend> {
    const file = await open(path, 'a+').then(async (f) => {
      await f.close();
      return open(path, 'r+');
    });
    const st = await file.stat();
    if (st.size < size) await file.truncate(size);
    return new TestFileBackend(file, size);
  }

  async read(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    this.check(offset, buffers);
    let at = offset;
    for (const b of buffers) {
      const { bytesRead } = await this.file.read(b, 0, b.length, at);
      if (bytesRead !== b.length) b.fill(0, bytesRead);
      at += b.length;
    }
  }

  async write(offset: number, buffers: readonly Uint8Array[]): Promise<void> {
    this.check(offset, buffers);
    await this.file.writev(buffers as Uint8Array[], offset);
  }

  flush(): Promise<void> {
    return this.file.datasync();
  }

  async discard(): Promise<void> {
    throw new BlockError('ENOTSUP', 'no discard');
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.write(offset, [Buffer.alloc(length)]);
  }

  close(): Promise<void> {
    return this.file.close();
  }

  private check(offset: number, buffers: readonly Uint8Array[]): void {
    const length = buffers.reduce((n, b) => n + b.length, 0);
    if (offset < 0 || offset + length > this.size) throw new BlockError('ERANGE', `${offset}+${length} beyond ${this.size}`);
  }
}
