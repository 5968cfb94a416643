/** The sample devices `muser run` knows, by name. */
import type { DeviceSpec } from '../index.js';
import { benchDevice } from './bench.js';
import { timerDevice } from './timer.js';
import { counterDevice } from './counter.js';
import { gpioSample } from './gpio.js';
import { nvmeSample } from './nvme.js';
import { virtioBlkSample } from './virtio-blk.js';
import { virtioRng } from '../index.js';

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
}

/** Every sample, by name. */
export const SAMPLES: Record<string, Sample> = {
  counter: { description: "the README's example: a counter register, MSI-X, DMA", create: () => counterDevice() },
  bench: { description: '4 KiB RAM BAR, a doorbell BAR, MSI-X and INTx (benchmark target)', create: () => benchDevice() },
  timer: { description: 'the original sample server: BAR0 timer firing INTx and DMA, 16 KiB sparse BAR1, live migration', create: (o) => timerDevice(o) },
  gpio: gpioSample,
  'virtio-blk': virtioBlkSample,
  nvme: nvmeSample,
  'virtio-rng': { description: 'virtio entropy source: one queue filled with random bytes', create: () => virtioRng() },
};
