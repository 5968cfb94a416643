/** The sample devices `muser run` knows, by name. */
import { benchDevice } from './bench.js';
import { timerDevice } from './timer.js';
import { counterDevice } from './counter.js';
import { gpioSample } from './gpio.js';
import { nvmeSample } from './nvme.js';
import { virtioBlkSample } from './virtio-blk.js';
import { virtioRng } from '../index.js';
import type { Sample } from './sample.js';

export type { Sample, SampleOption, SampleOptions } from './sample.js';

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
