/**
 * A device whose behaviour lives in another program (Python, or anything
 * that speaks docs/device-programs.md): muser starts it, builds a real
 * Device from its HELLO and serves that like any other, asking the program
 * only for the register callbacks it declared.
 *
 * A program that dies, hangs past the time limit or breaks the protocol is
 * stopped and the reason logged; from then on every access that needs it
 * fails at once with EIO, while the rest of the device (registers muser
 * stores, config space) and every other device of the process go on.
 */
import type { ChildProcess } from 'node:child_process';
import { Device } from '../device/device.js';
import { Errno } from '../device/errors.js';
import { consoleLogger, type Logger, type LogLevel } from '../device/logger.js';
import type { DeviceSpec, ResetReason } from '../device/spec.js';
import { buildProgramDevice, checkConfigWindow, type BuiltProgramDevice } from './build.js';
import { ProgramConnection } from './connection.js';
import { parseHello, type ProgramRegister } from './hello.js';
import { launchProgram, ProgramStartError } from './launch.js';
import { ProgramMemory } from './memory.js';
import { programMigration } from './migration.js';
import { decodeEmpty, decodeLog, decodeU32, decodeValue, encodeRead, encodeWrite, json, Kind, MAX_DATA, parseJsonObject, PROGRAM_PROTOCOL_VERSION, ProgramProtocolError, valueFromJson, valueToJson } from './wire.js';

/** Default time limit of each request to the program. */
export const DEFAULT_PROGRAM_TIMEOUT_MS = 5000;
/** Least time a program gets to send HELLO (interpreters start slowly on a cold cache). */
const MIN_START_TIMEOUT_MS = 10_000;
/** LOG's levels, by number. */
const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
/** How long a program that closed its socket gets to exit, so that its exit status is in the log. */
const EXIT_GRACE_MS = 1000;

/** Options of {@link startDeviceProgram}. */
export interface DeviceProgramOptions {
  /** The command that runs the program, e.g. `['python3', 'dev.py']` (see `programCommand`). */
  command: readonly string[];
  /** Arguments after the command (the device's options, `--name=value`). */
  args?: readonly string[];
  /** Time limit of each request to the program, in ms (default 5000). */
  timeoutMs?: number;
  /** Time the program gets to send HELLO, in ms (default: 10 s, or `timeoutMs` if longer). */
  helloTimeoutMs?: number;
  /** A logger, or the level of the default stderr logger named after the device (default 'info'). */
  log?: Logger | LogLevel;
  /** Sets MUSER_VERBOSE=1 for the program. */
  verbose?: boolean;
  /** How messages name the program (default: the command's last word). */
  label?: string;
}

/**
 * Starts a device program and builds its device. Resolves once the
 * program's HELLO was accepted; rejects with a ProgramStartError when the
 * program cannot start, exits first, does not say HELLO in time, or
 * describes a device muser refuses (the message names the field).
 *
 * @example
 * ```ts
 * import { serve, startDeviceProgram } from 'muser';
 *
 * const program = await startDeviceProgram({ command: ['python3', 'python/examples/pvpanic.py'] });
 * serve(program.device, '/tmp/pvpanic.sock');
 * ```
 */
export async function startDeviceProgram(options: DeviceProgramOptions): Promise<DeviceProgram> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_PROGRAM_TIMEOUT_MS;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) throw new RangeError(`timeoutMs must be a positive integer, got ${timeoutMs}`);
  const label = options.label ?? options.command[options.command.length - 1];
  const { child, fd } = launchProgram(options.command, options.args ?? [], options.verbose ? { MUSER_VERBOSE: '1' } : {});
  const program = new DeviceProgram(child, fd, timeoutMs, label, options.log ?? 'info');
  // A program that fails to start has its socket closed and is killed unless it exits
  // within a second: time enough to print why (a refused HELLO's SpecError, say).
  await program.started(options.helloTimeoutMs ?? Math.max(timeoutMs, MIN_START_TIMEOUT_MS));
  return program;
}

/** A running device program and the device it serves. See {@link startDeviceProgram}. */
export class DeviceProgram {
  private readonly conn: ProgramConnection;
  private built: BuiltProgramDevice | undefined;
  private memory: ProgramMemory | undefined;
  private deviceValue: Device | undefined;
  private log: Logger;
  private stopping = false;
  private hello: { resolve(): void; reject(e: Error): void } | undefined;

  /** @internal use {@link startDeviceProgram} */
  constructor(
    readonly child: ChildProcess,
    fd: number,
    timeoutMs: number,
    readonly label: string,
    private readonly logOption: Logger | LogLevel,
  ) {
    this.log = typeof logOption === 'object' ? logOption : consoleLogger(label, logOption);
    this.conn = new ProgramConnection(fd, {
      onRequest: (kind, id, payload) => this.onRequest(kind, id, payload),
      onEvent: (kind, payload) => this.onEvent(kind, payload),
      onBroken: (reason) => this.onBroken(reason),
    }, timeoutMs);
    child.on('error', (e) => this.conn.break(`could not be started: ${e.message}`));
    child.on('exit', (code, signal) => this.conn.break(exitReason(code, signal)));
  }

  /** The device, once HELLO was accepted. */
  get device(): Device {
    if (!this.deviceValue) throw new Error('the device program has not said HELLO yet');
    return this.deviceValue;
  }

  /** Why the program no longer serves, or undefined while it does. */
  get failure(): string | undefined {
    return this.conn.broken;
  }

  /** Stops the program (SIGTERM, then SIGKILL): the device is no longer served. */
  stop(): void {
    this.stopping = true;
    this.conn.break('was stopped');
    terminate(this.child);
  }

  /** @internal Resolves once HELLO was accepted. */
  started(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.conn.break(`did not say HELLO within ${timeoutMs} ms`), timeoutMs);
      this.hello = {
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
    });
  }

  private onBroken(reason: string): void {
    const settle = (why: string): void => {
      if (this.hello) {
        const early = /^(exited|was killed|closed)/.test(why) ? ' before its HELLO was accepted' : '';
        this.hello.reject(new ProgramStartError(`device program ${this.label} ${why}${early}`));
        this.hello = undefined;
      } else if (!this.stopping) {
        this.log.error(`device program ${this.label} ${why}; accesses needing it now fail with EIO`);
      }
      // Its socket is closed: a program that still works exits by itself (and may say why
      // on stderr first). One that is spinning, or stuck in a callback, is killed.
      if (!this.stopping) killLater(this.child, EXIT_GRACE_MS);
    };
    if (reason !== 'closed its socket' || !alive(this.child)) return settle(reason);
    // It is probably exiting: wait a moment for its status, the more useful news.
    const timer = setTimeout(() => settle(reason), EXIT_GRACE_MS);
    this.child.once('exit', (code, signal) => {
      clearTimeout(timer);
      settle(exitReason(code, signal));
    });
  }

  private onRequest(kind: number, id: number, payload: Buffer): void {
    switch (kind) {
      case Kind.HELLO:
        return this.onHello(id, payload);
      case Kind.DMA_READ:
      case Kind.DMA_WRITE:
        if (!this.memory) throw new ProgramProtocolError('DMA before HELLO');
        void this.memory.serve(kind, id, payload);
        return;
      case Kind.GET_REGISTER: {
        const { name } = this.registerMessage(payload, 'GET_REGISTER');
        const { entry, why } = this.stored(name);
        if (!entry) return this.conn.replyError(id, kind, Errno.ENOENT, why!);
        const value = entry.register.width === 8 ? entry.map.get64(name) : entry.map.get(name);
        this.conn.reply(id, kind, json({ value: valueToJson(value) }));
        return;
      }
    }
  }

  private onEvent(kind: number, payload: Buffer): void {
    if (!this.deviceValue) throw new ProgramProtocolError(`event kind ${kind} before HELLO`);
    switch (kind) {
      case Kind.LOG: {
        const { level, text } = decodeLog(payload);
        this.log[LOG_LEVELS[level]](text);
        return;
      }
      case Kind.TRIGGER: {
        const vector = decodeU32(payload, 'TRIGGER');
        try {
          this.deviceValue.trigger(vector);
        } catch (e) {
          this.log.warn(`device program raised interrupt vector ${vector}: ${(e as Error).message}`);
        }
        return;
      }
      case Kind.DIRTY:
        return this.memory!.dirty(payload);
      case Kind.SET_REGISTER: {
        const { name, value } = this.registerMessage(payload, 'SET_REGISTER');
        const { entry, why } = this.stored(name);
        if (!entry) return this.log.warn(`device program set a register: ${why}`);
        if (value === undefined || value >= 1n << BigInt(entry.register.width * 8)) {
          return this.log.warn(`device program set register ${name} to a value that is not a ${entry.register.width}-byte integer`);
        }
        entry.map.set(name, value);
        return;
      }
    }
  }

  private onHello(id: number, payload: Buffer): void {
    if (this.deviceValue) throw new ProgramProtocolError('HELLO sent twice');
    const hello = parseJsonObject(payload, 'HELLO');
    if (hello.version !== PROGRAM_PROTOCOL_VERSION) {
      const message = `protocol version ${JSON.stringify(hello.version)} is not supported: this muser speaks version ${PROGRAM_PROTOCOL_VERSION}`;
      this.conn.replyError(id, Kind.HELLO, Errno.EPROTO, message);
      this.conn.break(`asked for ${message}`);
      return;
    }
    try {
      this.deviceValue = this.buildDevice(parseHello(hello).device);
    } catch (e) {
      const message = (e as Error).message;
      this.conn.replyError(id, Kind.HELLO, Errno.EINVAL, message);
      this.conn.break(`described a device muser refuses: ${message}`);
      return;
    }
    this.conn.reply(id, Kind.HELLO, json({ version: PROGRAM_PROTOCOL_VERSION, maxData: MAX_DATA }));
    this.hello?.resolve();
    this.hello = undefined;
  }

  private buildDevice(description: ReturnType<typeof parseHello>['device']): Device {
    if (typeof this.logOption !== 'object' && description.name) this.log = consoleLogger(description.name, this.logOption);
    const log = this.log;
    const built = buildProgramDevice(description, {
      read: (bar, r) => this.ask(Kind.READ, encodeRead(bar, r.width, r.offset), r, bar, decodeValue),
      write: (bar, r, value) => this.ask(Kind.WRITE, encodeWrite(bar, r.width, r.offset, value), r, bar, decodeEmpty('WRITE')),
      configWritten: (r, value) => this.conn.send(Kind.CONFIG_WRITE, json({ name: r.name, value: valueToJson(value) })),
    }, log);
    this.built = built;
    const spec: DeviceSpec = {
      ...built.spec,
      onReset: (reason) => this.reset(reason),
      onConnect: () => {
        this.conn.send(Kind.CONNECT);
        this.memory?.connect();
      },
      onDisconnect: () => {
        this.memory?.disconnect();
        this.conn.send(Kind.DISCONNECT);
      },
      onDispose: () => this.stop(),
    };
    if (description.migratable) Object.assign(spec, programMigration(this.conn, built));
    else spec.migration = false;
    const device = new Device(spec);
    try {
      checkConfigWindow(device, built.configWindow);
    } catch (e) {
      device.dispose();
      throw e;
    }
    this.memory = new ProgramMemory(this.conn, device, log);
    device.config.onChange((ev) => {
      if (ev.type === 'command') this.memory?.updateAllowed();
    });
    return device;
  }

  /** A register access the program serves. */
  private ask<T>(kind: Kind, payload: Buffer, r: ProgramRegister, bar: number, decode: (reply: Buffer) => T): Promise<T> {
    this.memory?.updateAllowed();
    const what = `a ${kind === Kind.READ ? 'read' : 'write'} of register ${r.name} (BAR ${bar} +0x${r.offset.toString(16)})`;
    return this.conn.call(kind, payload, what, decode);
  }

  private async reset(reason: ResetReason): Promise<void> {
    for (const map of this.built?.maps ?? []) map.reset();
    this.memory?.updateAllowed();
    if (this.conn.broken !== undefined) return;
    try {
      await this.conn.call(Kind.RESET, json({ reason }), `RESET (${reason})`, decodeEmpty('RESET'));
    } catch (e) {
      // A program that broke meanwhile is logged already (or being stopped): muser's part of the reset is done.
      if (this.conn.broken === undefined) throw e;
    }
  }

  private registerMessage(payload: Buffer, what: string): { name: string; value: bigint | undefined } {
    const m = parseJsonObject(payload, what);
    if (typeof m.name !== 'string') throw new ProgramProtocolError(`${what}: "name" must be a string`);
    return { name: m.name, value: valueFromJson(m.value) };
  }

  /** A register muser stores, by name; undefined (and `why`) for a name the program may not use. */
  private stored(name: string): { entry?: NonNullable<ReturnType<BuiltProgramDevice['registers']['get']>>; why?: string } {
    const entry = this.built?.registers.get(name);
    if (!entry) return { why: `no register is named ${JSON.stringify(name)}` };
    if (entry.register.read) return { why: `register ${name} has a read callback: its value is the program's` };
    return { entry };
  }
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function exitReason(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

/** SIGKILL unless it exits within `ms`. */
function killLater(child: ChildProcess, ms: number): void {
  if (!alive(child)) return;
  const timer = setTimeout(() => alive(child) && child.kill('SIGKILL'), ms);
  timer.unref();
  child.once('exit', () => clearTimeout(timer));
}

/** SIGTERM now, SIGKILL if it lingers. */
function terminate(child: ChildProcess): void {
  if (!alive(child)) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }, 2000);
  timer.unref();
}

