/**
 * What a role running on a device worker thread gets from muser: guest
 * memory mapped by this thread (see memory.ts), interrupts that go straight
 * to the MSI-X eventfd while the main thread says that is what raising the
 * vector means, doorbells (an ioeventfd watched here, or a doorbell message
 * the main thread forwarded), and a channel to the main thread.
 */
import type { DmaAccess } from '../dma-access.js';
import type { QueueMemory } from '../queue-memory.js';

export interface ThreadRuntime {
  /** Guest memory, as `device.dma` on the main thread. */
  readonly dma: DmaAccess;
  /** The same memory as queue code sees it. */
  readonly memory: QueueMemory;
  /**
   * Raises MSI-X `vector` by writing its eventfd, when the main thread
   * routed it here; otherwise (masked, another interrupt mode, routing
   * changing) sends `fallback` to the main thread, which raises it there.
   */
  signal(vector: number, fallback: unknown): void;
  /** Sends a role event to the main thread. */
  post(m: unknown): void;
  /** Called with (slot, count) when a doorbell of this thread rings. */
  onDoorbell: (slot: number, count: number) => void;
  /** Sends pending dirty-page reports now (before answering "idle"). */
  flushDirty(): void;
}

/** What a role module returns from `startRole`: how it takes the main thread's messages. */
export interface RoleHandlers {
  /** A message that needs no answer. */
  message(m: unknown): void;
  /** A request: its result is sent back as the answer. */
  ask(m: unknown): Promise<unknown>;
}

/** The export of a role module. */
export type StartRole = (runtime: ThreadRuntime, data: unknown) => Promise<RoleHandlers>;
