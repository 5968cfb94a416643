/**
 * What a controller is set up with: its fixed description, given when it
 * is made, and the feature values the host sets (Set Features), with their
 * power-on defaults.
 */
import type { Namespace } from './namespace.js';

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

/** The feature values at power-on and after a controller reset; `vwc`: the backend has a volatile write cache. */
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
