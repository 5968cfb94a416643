/** What a sample is to `muser run`: a description, its options, and how to make its device. */
import type { DeviceSpec } from '../index.js';

/** A command-line option of a sample: `muser run <sample> <socket> --name value`. */
export interface SampleOption {
  /** A string option takes the next argument; a boolean takes none. */
  type: 'string' | 'boolean';
  /**
   * A string option whose value may be left out: it then takes the next
   * argument only when that is a number, and is `true` otherwise.
   */
  optionalNumber?: boolean;
  description: string;
}

/** What `create` receives: `-v`, and the values of the sample's own options. */
export interface SampleOptions {
  verbose: boolean;
  [name: string]: string | boolean | undefined;
}

/** A runnable sample. */
export interface Sample {
  description: string;
  /** Options that may follow the sample's socket on the command line. */
  options?: Record<string, SampleOption>;
  create(options: SampleOptions): DeviceSpec | Promise<DeviceSpec>;
  /**
   * What these options keep only in the device's process, so that it is
   * lost when an isolated device's child dies or is reloaded (`muser run
   * --isolate` warns with it); undefined when nothing is.
   */
  volatile?(options: Record<string, string | boolean | undefined>): string | undefined;
  /**
   * Why these options cannot run isolated (`muser run --isolate` refuses
   * to start with it); undefined when they can.
   */
  notIsolated?(options: Record<string, string | boolean | undefined>): string | undefined;
}
