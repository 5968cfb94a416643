/**
 * How a device takes part in live migration (VFIO migration v2 over
 * vfio-user). Devices whose state is region memory plus a plain `state`
 * object need none of this: muser saves and restores them by itself.
 */
import type { Device, MaybePromise } from './types.js';
import type { MigrationState } from '../protocol/constants.js';

/** VFIO migration v2 device states (`enum vfio_device_mig_state`). */
export { MigrationState } from '../protocol/constants.js';

/**
 * Migration data a device produces: all of it at once, or chunks from a
 * (sync or async) iterable that muser pulls lazily as the client reads.
 * muser re-chunks it to whatever size each MIG_DATA_READ asks for.
 */
export type MigrationData = Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/** Takes the RESUMING stream chunk by chunk, as the client writes it. */
export interface MigrationLoader {
  /** One chunk, in order; only valid during the call. */
  write(chunk: Uint8Array): MaybePromise<void>;
  /**
   * The stream ended (RESUMING -> STOP). Validate and apply; throw to fail
   * the transition (the device then enters ERROR).
   */
  end(): MaybePromise<void>;
}

/**
 * Custom migration. Every callback may be async. Without `save`/`load`
 * (or `loader`) muser migrates the default way: each memory-backed
 * region's bytes, `device.state` as JSON, config space and pending
 * interrupts.
 */
export interface MigrationSpec {
  /** Offer PRE_COPY (and PRE_COPY_P2P with p2p); default false. */
  preCopy?: boolean;
  /** Offer the P2P states RUNNING_P2P / PRE_COPY_P2P; default false. */
  p2p?: boolean;
  /**
   * Called for each single arc of a transition. On an arc that stops the
   * device (or only its DMA, for P2P states) it runs first: the device
   * stops its own work, and muser then defers interrupts and holds DMA. On
   * an arc that lets it run, muser first replays deferred interrupts and
   * releases DMA, then calls this so the device resumes pending work.
   * Throwing fails the request; the state stays at `from`.
   */
  onTransition?(from: MigrationState, to: MigrationState, device: Device): MaybePromise<void>;
  /**
   * Data streamed while in PRE_COPY (the device still runs). Default: none.
   * When the client moves on to STOP_COPY, whatever it has not read yet is
   * streamed first, then `save`'s data; the destination receives both.
   */
  savePreCopy?(device: Device): MaybePromise<MigrationData>;
  /** The device state for STOP_COPY. */
  save?(device: Device): MaybePromise<MigrationData>;
  /** Restores the device from everything written in RESUMING, at once. */
  load?(data: Uint8Array, device: Device): MaybePromise<void>;
  /** Streaming alternative to `load`: a sink for each RESUMING session. */
  loader?(device: Device): MigrationLoader;
}
