/**
 * How a device takes part in live migration. Devices whose state is region
 * memory plus a plain `state` object need none of this.
 */
import type { Device } from './device.js';
import type { MaybePromise } from './spec.js';

/** VFIO migration v2 device states. */
export const enum MigrationState {
  ERROR = 0,
  STOP = 1,
  RUNNING = 2,
  STOP_COPY = 3,
  RESUMING = 4,
  RUNNING_P2P = 5,
  PRE_COPY = 6,
  PRE_COPY_P2P = 7,
}

/** Custom migration callbacks. Every callback may be async. */
export interface MigrationSpec {
  /** Offer PRE_COPY states (default false). */
  preCopy?: boolean;
  /** Called after each single-arc state change. */
  onTransition?(from: MigrationState, to: MigrationState, device: Device): MaybePromise<void>;
  /**
   * Produces the device state for STOP_COPY (and PRE_COPY): the whole state
   * as bytes, or a stream of chunks. muser chunks it to the client's size.
   */
  save(device: Device): MaybePromise<Uint8Array> | AsyncIterable<Uint8Array>;
  /** Restores the device from the bytes written in RESUMING, all at once. */
  load(data: Uint8Array, device: Device): MaybePromise<void>;
}
