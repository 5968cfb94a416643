/**
 * The `gpio` sample: an ACCES PCI-IDIO-16 (16 isolated inputs, 16 FET
 * outputs) that Linux's own `gpio-pci-idio-16` driver binds to and drives.
 *
 * Identity: vendor 0x494f, device 0x0dc8. Registers: BAR 2, an I/O BAR of
 * 256 bytes, byte wide, as the board and its Linux driver define them: see
 * the table in {@link Gpio} (most offsets mean one thing when read, another
 * when written).
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
 * The registers are a declarative table ({@link Gpio.registers}); with -v
 * the map traces every access by name (`gpio: read reg=0x1 name=in0_7 val=0x00`).
 */
import type { Readable, Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { defineRegisters, type Device, type DeviceSpec, type Logger, type RegisterEntry, type RegisterMap } from '../index.js';
import { GpioDma } from './gpio-dma.js';

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
  /** BAR 2, as the board's manual lists it. */
  readonly registers: RegisterMap<Device | undefined>;
  private readonly out: (line: string) => void;

  constructor(options: GpioOptions = {}) {
    this.out = options.log ?? ((line) => process.stderr.write(`${line}\n`));
    this.dma = new GpioDma(() => this.device, (line) => this.log(line));
    const verbose = options.verbose ?? false;
    const say = (msg: string): void => this.log(msg);
    const log: Logger = { debug: (msg) => verbose && say(msg), info: say, warn: say, error: say };
    this.registers = defineRegisters([...this.boardRegisters(), ...this.dma.registers()], { log });
  }

  /**
   * The PCI-IDIO-16's registers. Most offsets mean one thing when read and
   * another when written, as on the board.
   */
  private boardRegisters(): RegisterEntry<Device | undefined>[] {
    return [
      {
        name: 'out0_7', offset: 0x0, width: 1, description: 'outputs 0-7 (read back)',
        read: () => this.outputs & 0xff,
        write: (v) => this.setOutputs((this.outputs & 0xff00) | v),
      },
      { name: 'in0_7', offset: 0x1, width: 1, access: 'ro', description: 'inputs 0-7', read: () => this.inputs & 0xff },
      { name: 'clear_irq', offset: 0x1, width: 1, access: 'wo', description: 'clear the interrupt', write: () => this.clearIrq() },
      { name: 'irq_enable', offset: 0x2, width: 1, access: 'ro', description: 'a read enables the IRQ (reads 0)', read: () => this.enableIrq() },
      { name: 'irq_disable', offset: 0x2, width: 1, access: 'wo', description: 'a write disables the IRQ', write: () => this.disableIrq() },
      { name: 'filter_on', offset: 0x3, width: 1, access: 'ro', description: 'a read activates the input filters', read: () => ((this.filters = true), 0) },
      { name: 'filter_off', offset: 0x3, width: 1, access: 'wo', description: 'a write deactivates them', write: () => void (this.filters = false) },
      {
        name: 'out8_15', offset: 0x4, width: 1, description: 'outputs 8-15 (read back)',
        read: () => this.outputs >> 8,
        write: (v) => this.setOutputs((this.outputs & 0x00ff) | (v << 8)),
      },
      { name: 'in8_15', offset: 0x5, width: 1, access: 'ro', description: 'inputs 8-15', read: () => this.inputs >> 8 },
      { name: 'irq_status', offset: 0x6, width: 1, access: 'ro', description: 'bit 2 pending; bit 0/1 inputs 0-7/8-15 changed', read: () => this.status },
    ];
  }

  /** Writes a log line (`gpio: ...`). */
  log(msg: string): void {
    this.out(`gpio: ${msg}`);
  }

  /** Serves a one-byte register read, as the guest's would be. */
  readReg(offset: number): number {
    const bytes = this.registers.read(offset, 1, this.device);
    if (bytes instanceof Promise) throw new Error('gpio registers answer synchronously');
    return bytes[0];
  }

  /** Serves a one-byte register write, as the guest's would be. */
  writeReg(offset: number, v: number): void {
    if (this.registers.write(offset, Uint8Array.of(v), this.device) instanceof Promise) throw new Error('gpio registers answer synchronously');
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
    this.registers.reset();
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

  /** Reading the enable register enables the IRQ; it reads 0. */
  private enableIrq(): number {
    if (!this.irqEnabled) {
      this.irqEnabled = true;
      this.log('irq enabled');
    }
    return 0;
  }

  private disableIrq(): void {
    if (this.irqEnabled) this.log('irq disabled');
    this.irqEnabled = false;
  }

  private clearIrq(): void {
    if (this.status !== 0) this.log(`irq cleared (status was ${hex(this.status)})`);
    this.status = 0;
  }
}

/** Builds the gpio device description around a model. */
export function gpioDevice(gpio: Gpio = new Gpio()): DeviceSpec {
  return {
    name: 'gpio',
    identity: { vendorId: GPIO_VENDOR_ID, deviceId: GPIO_DEVICE_ID, classCode: 0xff0000 },
    bars: {
      [GPIO_BAR]: gpio.registers.bar({ kind: 'io', size: GPIO_BAR_SIZE }),
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
