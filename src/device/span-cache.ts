/**
 * The last DMA region a synchronous stretch of work located, so that the
 * next ranges inside it are found without asking the DMA layer again (its
 * access checks, its region lookup). A cache is good only while nothing
 * can change the DMA state: within one synchronous run, such as a queue's
 * drain and the handler calls it makes, because unmaps, Bus Master Enable
 * and migration's hold all arrive as messages, read between turns of the
 * event loop (on a worker thread, where the main thread may clear the DMA
 * flag at any moment, the flag is asked again before each answer: see
 * GuestSpan.recheck). Whoever owns a cache clears it when such a run begins; ranges
 * it cannot vouch for (another region, a right it was not given, writes
 * that migration must log) go to the DMA layer as before.
 */
import { DmaMapFlag } from '../protocol/constants.js';
import type { GuestSpan, QueueMemory } from './queue-memory.js';

const NOTHING = new Uint8Array(0);

export class SpanCache {
  private memory: Uint8Array = NOTHING;
  private start = 0;
  private rights = 0;
  private recheck: (() => boolean) | undefined;

  /** Forgets the region (a new synchronous run begins). */
  clear(): void {
    this.memory = NOTHING;
    this.rights = 0;
  }

  /** {@link QueueMemory.locate}, answered from the cached region when the range lies inside it with the right asked for. */
  locate(memory: QueueMemory, addr: number, length: number, write: boolean, out: GuestSpan): boolean {
    const start = this.start;
    const recheck = this.recheck;
    if ((this.rights & (write ? DmaMapFlag.WRITE : DmaMapFlag.READ)) !== 0 && length > 0 && addr >= start && addr + length <= start + this.memory.length && (recheck === undefined || recheck())) {
      out.memory = this.memory;
      out.offset = addr - start;
      out.start = start;
      out.rights = this.rights;
      out.recheck = recheck;
      return true;
    }
    if (!memory.locate(addr, length, write, out)) return false;
    this.memory = out.memory;
    this.start = out.start;
    this.rights = out.rights;
    this.recheck = out.recheck;
    return true;
  }
}
