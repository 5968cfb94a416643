/**
 * What an NVMe controller is given and what it reports: the host around it,
 * its fixed description, its counters and its saved feature values. These
 * types sit below the controller and its parts (admin commands, migration
 * state, queues) so that none of them imports the controller.
 */
import type { QueueMemory } from '../device/queue-memory.js';
import type { Namespace } from './namespace.js';

/** What the controller needs from the device around it. */
export interface ControllerHost {
  readonly memory: QueueMemory;
  /** The guest enabled MSI-X: completions raise the queue's vector. */
  msixEnabled(): boolean;
  /** MSI-X vectors the function has. */
  msixVectors(): number;
  raiseMsix(vector: number): void;
  /** Pin-based interrupt (when MSI-X is off and INTMS does not mask it). */
  raiseIntx(): void;
  /**
   * Resolves once the commands a reset abandoned can no longer write guest
   * memory, given a Promise that resolves when they have all settled (see
   * settleAbandoned in device/abandoned: bounded, then their memory is
   * revoked).
   */
  settleAbandoned(settled: Promise<void>): Promise<void>;
  /**
   * With the doorbells in a page the client maps and muser watches
   * (`mmapDoorbells`): what the guest wrote to doorbell `index` that was
   * not seen yet (a write just before a migration stopped the device), or
   * undefined.
   */
  readonly doorbellPage?: DoorbellPage;
  /** Tells whoever serves the device why the controller went fatal (CSTS.CFS). */
  logFatal?(reason: string): void;
  /** Says in the server's log why an I/O command failed (rate-limited: {@link Device.warnDriver}). */
  warnDriver?(message: string): void;
}

/** The doorbells in mapped memory, as the controller sees them (see {@link ControllerHost.doorbellPage}). */
export interface DoorbellPage {
  unseen(index: number): number | undefined;
}

/** The controller's fixed description. */
export interface ControllerConfig {
  namespaces: readonly Namespace[];
  /** I/O queue pairs offered (Number of Queues). */
  ioQueues: number;
  /** Largest queue, in entries (CAP.MQES + 1). */
  maxQueueEntries: number;
  /** MDTS: largest transfer is 4 KiB << mdts. */
  mdts: number;
  serial: string;
  model: string;
  firmware: string;
  vendorId: number;
  subsystemVendorId: number;
  /** Offer Doorbell Buffer Config (shadow doorbells with EventIdx). */
  shadowDoorbells: boolean;
  /**
   * With shadow doorbells: after a submission queue goes idle, keep reading
   * its shadow tail for this many microseconds (0: never), with EventIdx set
   * so the driver does not ring meanwhile.
   */
  pollMicroseconds: number;
}

/** Counters for tests, logs and benchmarks. */
export interface ControllerStats {
  /** Doorbell register writes (each one a message under QEMU). */
  doorbellWrites: number;
  /** Submission queue doorbells read from the shadow buffer. */
  shadowReads: number;
  /** Commands fetched, admin and I/O. */
  commands: number;
  /** I/O commands fetched. */
  ioCommands: number;
  /** Doorbell register writes for I/O queues. */
  ioDoorbellWrites: number;
  /** Doorbell writes seen in the mapped doorbell page (`mmapDoorbells`): no message each. */
  mappedDoorbells: number;
  completions: number;
  interrupts: number;
  /** I/O commands that finished during their doorbell, without waiting (the synchronous fast path). */
  fastCommands: number;
  /** Doorbells rung through an ioeventfd (`ioeventfdDoorbells`): a kick each, no message. */
  ioeventfdKicks: number;
  /** Of those, kicks on a queue without shadow doorbells: its new value is unknown, the kick is lost. */
  lostKicks: number;
}

/** Why the controller set CSTS.CFS, for logs and tests. */
export type FatalReason = string;

/** The saved feature values (Get / Set Features). */
export interface FeatureValues {
  arbitration: number;
  powerManagement: number;
  temperatureThreshold: number;
  errorRecovery: number;
  writeCache: number;
  interruptCoalescing: number;
  writeAtomicity: number;
  asyncEventConfig: number;
  keepAlive: number;
  /** Allocated queues (0-based), once Set Features Number of Queues ran. */
  queuesAllocated: boolean;
}

/** Feature values at reset; `vwc`: a volatile write cache is present (and enabled). */
export function defaultFeatures(vwc: boolean): FeatureValues {
  return {
    arbitration: 0,
    powerManagement: 0,
    temperatureThreshold: 0x0157,
    errorRecovery: 0,
    writeCache: vwc ? 1 : 0,
    interruptCoalescing: 0,
    writeAtomicity: 0,
    asyncEventConfig: 0,
    keepAlive: 0,
    queuesAllocated: false,
  };
}
