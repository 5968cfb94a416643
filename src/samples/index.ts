/** The sample devices `muser run` knows, by name. */
import type { ParseArgsConfig } from 'node:util';
import type { DeviceSpec } from '../server/spec.js';
import { benchDevice } from './bench.js';
import { timerDevice } from './timer.js';
import { counterDevice } from './counter.js';
import { gpioSample } from './gpio.js';
import { nvmeSample } from './nvme.js';
import { virtioBlkSample } from './virtio-blk-backends.js';
import { virtioRng } from './virtio-rng.js';

/** Values of a sample's own command-line options, as node:util parseArgs gives them. */
export type SampleValues = Record<string, string | boolean | undefined>;

/** A runnable sample. */
export interface Sample {
  description: string;
  /** The sample's own command-line options (node:util parseArgs config). */
  options?: ParseArgsConfig['options'];
  /** One line per option, for the usage text. */
  optionHelp?: string[];
  create(options: { verbose: boolean; values: SampleValues }): DeviceSpec | Promise<DeviceSpec>;
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
