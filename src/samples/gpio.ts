/**
 * The `gpio` sample: an ACCES PCI-IDIO-16 (16 isolated inputs, 16 FET
 * outputs) that Linux's own `gpio-pci-idio-16` driver binds to and drives.
 *
 * Identity: vendor 0x494f, device 0x0dc8. Registers: BAR 2, an I/O BAR of
 * 256 bytes, byte wide, as the board and its Linux driver define them:
 *
 *   off  read                        write
 *   0x0  outputs 0-7 (readback)      outputs 0-7
 *   0x1  inputs 0-7                  clear interrupt
 *   0x2  enable IRQ (reads 0)        disable IRQ
 *   0x3  activate input filters      deactivate input filters
 *   0x4  outputs 8-15 (readback)     outputs 8-15
 *   0x5  inputs 8-15                 -
 *   0x6  IRQ status                  -
 *
 * IRQ status: bit 2 = interrupt pending; bit 0 / bit 1 = an input of 0-7 /
 * 8-15 changed since the last clear. (The regmap driver only tests bit 2;
 * older drivers want bit 2 and one of bits 0-1.) While the guest has the
 * IRQ enabled, every change of state of an input sets the status and raises
 * INTx; a write to 0x1 clears it.
 *
 * Offsets 0x80-0xff hold a muser test extension (see gpio-dma.ts) that the
 * Linux driver never touches: a tiny DMA engine used by the end-to-end tests.
 *
 * The inputs are the outside world: the sample's console (stdin lines, see
 * {@link GpioConsole}) or code holding the {@link Gpio} model changes them.
 * With -v every register access is logged (`gpio: read reg=0x1 ...`).
 */
import type { Readable, Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import type { Device } from '../server/device.js';
import type { DeviceSpec } from '../server/spec.js';
import { DMA_EXT_BASE, GpioDma } from './gpio-dma.js';

export const GPIO_VENDOR_ID = 0x494f;
export const GPIO_DEVICE_ID = 0x0dc8;
export const GPIO_BAR = 2;
export const GPIO_BAR_SIZE = 256;

/** Register offsets in BAR 2. */
export const GpioReg = {
  OUT0_7: 0x0,
  IN0_7: 0x1,
  IRQ_CTL: 0x2,
  FILTER_CTL: 0x3,
  OUT8_15: 0x4,
  IN8_15: 0x5,
  IRQ_STATUS: 0x6,
} as const;

/** IRQ status bits. */
export const GpioStatus = { LOW_CHANGED: 0x1, HIGH_CHANGED: 0x2, PENDING: 0x4 } as const;

const REG_NAMES: Record<number, [read: string, write: string]> = {
  0: ['out0_7', 'out0_7'],
  1: ['in0_7', 'clear_irq'],
  2: ['irq_enable', 'irq_disable'],
  3: ['filter_on', 'filter_off'],
  4: ['out8_15', 'out8_15'],
  5: ['in8_15', 'unused'],
  6: ['irq_status', 'unused'],
};

const hex = (v: number, digits = 2): string => `0x${v.toString(16).padStart(digits, '0')}`;

/** Options of the gpio model and device. */
export interface GpioOptions {
  /** Log every register access. */
  verbose?: boolean;
  /** Where log lines go (default: stderr). */
  log?: (line: string) => void;
}

/** The board's state and behaviour, independent of any transport. */
export class Gpio {
  /** Output latches, bits 0-15. */
  outputs = 0;
  /** Input lines, bits 0-15 (the outside world). */
  inputs = 0;
  irqEnabled = false;
  filters = false;
  /** IRQ status register. */
  status = 0;
  /** Interrupts raised (for tests and the console). */
  interrupts = 0;
  /** The device this model serves, once built. */
  device: Device | undefined;
  readonly dma: GpioDma;
  private readonly verbose: boolean;
  private readonly out: (line: string) => void;

  constructor(options: GpioOptions = {}) {
    this.verbose = options.verbose ?? false;
    this.out = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.dma = new GpioDma(() => this.device, (line) => this.log(line));
  }

  /** Writes a log line (`gpio: ...`). */
  log(msg: string): void {
    this.out(`gpio: ${msg}`);
  }

  /** Serves a one-byte register read. */
  readReg(offset: number): number {
    let v = 0;
    switch (offset) {
      case GpioReg.OUT0_7:
        v = this.outputs & 0xff;
        break;
      case GpioReg.IN0_7:
        v = this.inputs & 0xff;
        break;
      case GpioReg.IRQ_CTL:
        if (!this.irqEnabled) {
          this.irqEnabled = true;
          this.log('irq enabled');
        }
        break;
      case GpioReg.FILTER_CTL:
        this.filters = true;
        break;
      case GpioReg.OUT8_15:
        v = this.outputs >> 8;
        break;
      case GpioReg.IN8_15:
        v = this.inputs >> 8;
        break;
      case GpioReg.IRQ_STATUS:
        v = this.status;
        break;
      default:
        v = offset >= DMA_EXT_BASE ? this.dma.readReg(offset) : 0;
    }
    if (this.verbose && offset < DMA_EXT_BASE) this.log(`read reg=${hex(offset, 1)} name=${REG_NAMES[offset]?.[0] ?? 'unused'} val=${hex(v)}`);
    return v;
  }

  /** Serves a one-byte register write. */
  writeReg(offset: number, v: number): void {
    if (this.verbose && offset < DMA_EXT_BASE) this.log(`write reg=${hex(offset, 1)} name=${REG_NAMES[offset]?.[1] ?? 'unused'} val=${hex(v)}`);
    switch (offset) {
      case GpioReg.OUT0_7:
        this.setOutputs((this.outputs & 0xff00) | v);
        break;
      case GpioReg.IN0_7:
        if (this.status !== 0) this.log(`irq cleared (status was ${hex(this.status)})`);
        this.status = 0;
        break;
      case GpioReg.IRQ_CTL:
        if (this.irqEnabled) this.log('irq disabled');
        this.irqEnabled = false;
        break;
      case GpioReg.FILTER_CTL:
        this.filters = false;
        break;
      case GpioReg.OUT8_15:
        this.setOutputs((this.outputs & 0x00ff) | (v << 8));
        break;
      default:
        if (offset >= DMA_EXT_BASE) this.dma.writeReg(offset, v);
    }
  }

  /** Sets all 16 inputs; a change of state raises the IRQ when enabled. */
  setInputs(value: number): void {
    const next = value & 0xffff;
    const changed = next ^ this.inputs;
    if (changed === 0) return;
    const was = this.inputs;
    this.inputs = next;
    let irq = 'off';
    if (this.irqEnabled) {
      this.status |= GpioStatus.PENDING | (changed & 0xff ? GpioStatus.LOW_CHANGED : 0) | (changed & 0xff00 ? GpioStatus.HIGH_CHANGED : 0);
      this.interrupts++;
      irq = this.device ? this.device.trigger(0) : 'no-device';
    }
    this.log(`in=${hex(next, 4)} was=${hex(was, 4)} irq=${irq}`);
  }

  /** Sets one input line (0-15). */
  setInput(line: number, on: boolean): void {
    if (!Number.isInteger(line) || line < 0 || line > 15) throw new RangeError(`input line ${line} is not 0-15`);
    this.setInputs(on ? this.inputs | (1 << line) : this.inputs & ~(1 << line));
  }

  /** Back to power-on state; inputs keep their level (they are the outside world). */
  reset(): void {
    this.outputs = 0;
    this.irqEnabled = false;
    this.filters = false;
    this.status = 0;
    this.dma.reset();
  }

  /** One-line summary. */
  describe(): string {
    return `out=${hex(this.outputs, 4)} in=${hex(this.inputs, 4)} irq=${this.irqEnabled ? 'enabled' : 'disabled'} status=${hex(this.status)} interrupts=${this.interrupts}`;
  }

  private setOutputs(next: number): void {
    if (next === this.outputs) return;
    const was = this.outputs;
    this.outputs = next;
    this.log(`out=${hex(next, 4)} was=${hex(was, 4)}`);
  }
}

/** Builds the gpio device description around a model. */
export function gpioDevice(gpio: Gpio = new Gpio()): DeviceSpec {
  return {
    name: 'gpio',
    identity: { vendorId: GPIO_VENDOR_ID, deviceId: GPIO_DEVICE_ID, classCode: 0xff0000 },
    bars: {
      [GPIO_BAR]: {
        kind: 'io',
        size: GPIO_BAR_SIZE,
        read(offset, length) {
          const out = Buffer.alloc(length);
          for (let i = 0; i < length; i++) out[i] = gpio.readReg(offset + i);
          return out;
        },
        write(offset, data) {
          for (let i = 0; i < data.length; i++) gpio.writeReg(offset + i, data[i]);
        },
      },
    },
    interrupts: { intx: true },
    onConnect(device) {
      gpio.device = device;
    },
    onReset(reason, device) {
      gpio.device = device;
      gpio.reset();
      gpio.log(`reset (${reason})`);
    },
  };
}

/**
 * The sample's console: one command per line.
 *
 *   input <value>        set all 16 inputs (0x00ff, 255, 0b1010)
 *   set <line> <0|1>     set one input line (0-15)
 *   toggle <line>        flip one input line
 *   status               print outputs, inputs, IRQ state
 *   help
 */
export class GpioConsole {
  constructor(
    private readonly gpio: Gpio,
    private readonly reply: (line: string) => void,
  ) {}

  /**
   * Attaches to a stream of lines (stdin); EOF just stops reading. The
   * stream is unref'd: an open stdin never keeps the process alive once
   * the server has stopped.
   */
  attach(input: Readable): void {
    const rl = createInterface({ input, terminal: false });
    rl.on('line', (line) => this.command(line));
    (input as Readable & { unref?: () => void }).unref?.();
  }

  /** Runs one command line; returns false when it was not understood. */
  command(line: string): boolean {
    const [cmd, ...args] = line.trim().split(/\s+/);
    try {
      switch (cmd) {
        case '':
          return true;
        case 'input':
        case 'inputs':
          this.gpio.setInputs(parseNumber(args[0]));
          break;
        case 'set':
          this.gpio.setInput(parseNumber(args[0]), parseNumber(args[1]) !== 0);
          break;
        case 'toggle':
          this.gpio.setInput(parseNumber(args[0]), (this.gpio.inputs & (1 << parseNumber(args[0]))) === 0);
          break;
        case 'status':
          break;
        case 'help':
          this.reply('commands: input <value> | set <line> <0|1> | toggle <line> | status');
          return true;
        default:
          this.reply(`gpio: unknown command '${cmd}' (try help)`);
          return false;
      }
    } catch (e) {
      this.reply(`gpio: ${(e as Error).message}`);
      return false;
    }
    this.reply(`gpio: ${this.gpio.describe()}`);
    return true;
  }
}

function parseNumber(s: string | undefined): number {
  if (s === undefined || !/^(0x[0-9a-f]+|0b[01]+|0o[0-7]+|\d+)$/i.test(s)) throw new RangeError(`not a number: ${s ?? '(missing)'}`);
  return Number(s);
}

/** The `gpio` entry of the sample registry: the device plus a console on stdin. */
export const gpioSample = {
  description: 'ACCES PCI-IDIO-16 (Linux gpio-pci-idio-16 drives it); inputs from stdin: input <v> | set <n> <0|1>',
  create(options: { verbose: boolean }, input: Readable = process.stdin, output: Writable = process.stdout): DeviceSpec {
    const gpio = new Gpio({ verbose: options.verbose });
    new GpioConsole(gpio, (line) => output.write(`${line}\n`)).attach(input);
    return gpioDevice(gpio);
  },
};
