/**
 * Serves one device on a UNIX socket path: accepts one client at a time,
 * and after a client leaves, drops its state, resets the device and waits
 * for the next. Many Servers can share one process.
 */
import { EventEmitter } from 'node:events';
import { native } from '../native/index.js';
import { Listener, type ListenOptions } from '../transport/listener.js';
import { Device } from '../device/device.js';
import { consoleLogger, type Logger, type LogLevel } from '../device/logger.js';
import { DEFAULT_LIMITS, Session, type ServerLimits } from './session.js';
import type { DeviceSpec } from '../device/spec.js';
import { offerMigration, type MigrationOffer } from '../migration/offer.js';
import { checkServeOptions, DEFAULT_POLL_IDLE_MS, resolvePollIdleMs } from './options.js';

export { DEFAULT_POLL_IDLE_MS, resolvePollIdleMs } from './options.js';
import type { UnmodeledReport } from '../device/unmodeled.js';

/** Clients that may wait while another one is connected. */
const MAX_WAITING = 4;

/** Options for {@link Server}. */
export interface ServeOptions extends ListenOptions {
  /**
   * Limits offered at VERSION negotiation, and per-client bounds:
   * `maxPendingBytes` (backpressure, default 4 MiB) and `versionTimeoutMs`
   * (a connection that has not negotiated VERSION by then is closed,
   * default 10 s).
   */
  limits?: Partial<ServerLimits>;
  /** A logger, or the level for the default stderr logger (default 'warn'). */
  log?: Logger | LogLevel;
  /**
   * Polling mode. After each message on the client's socket or each
   * doorbell (ioeventfd) signal, the process keeps polling them without
   * sleeping in epoll, for `idleMs` (default {@link DEFAULT_POLL_IDLE_MS})
   * of inactivity; then it sleeps again until the next event. Saves the
   * wake-up of a sleeping thread on every exchange (tens of microseconds
   * across CPUs), at the price of one CPU kept at 100% while the device is
   * busy and for the idle window after. Timers, other devices and async
   * callbacks keep running: the loop spins, it does not block.
   * `true` uses the default window.
   */
  poll?: boolean | { idleMs?: number };
}

/**
 * Servers listening in this process (until close). Kept on globalThis so
 * that every copy of muser loaded in the process shares it: tsx gives the
 * modules a TypeScript device file imports copies of their own.
 */
const liveServers: Set<Server> = ((globalThis as unknown as Record<symbol, Set<Server> | undefined>)[Symbol.for('muser.listeningServers')] ??= new Set<Server>());

/** The Servers of this process that are listening: `muser run` stops those a failed device file started. */
export function listeningServers(): ReadonlySet<Server> {
  return liveServers;
}

/** Serves a device over vfio-user on a socket path. */
export class Server extends EventEmitter {
  readonly device: Device;
  readonly log: Logger;
  /** The device's live migration, or why it is not offered. */
  readonly migration: MigrationOffer;
  private readonly listener: Listener;
  private readonly limits: ServerLimits;
  private current: Session | undefined;
  /** A client is connected, or the device is still resetting after one. */
  private occupied = false;
  /** Accepted connections waiting for the device. */
  private waiting: number[] = [];
  private closing = false;
  private readonly pollIdleMs: number;

  /** Throws TypeError/RangeError naming the option for a bad one, before anything is built or bound. */
  constructor(device: Device | DeviceSpec, readonly path: string, options: ServeOptions = {}) {
    super();
    checkServeOptions(options);
    this.device = device instanceof Device ? device : new Device(device);
    this.log = typeof options.log === 'object' ? options.log : consoleLogger(this.device.name, options.log ?? 'warn');
    if (options.log === 'debug') traceDevice(this.device, this.log);
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.pollIdleMs = resolvePollIdleMs(options.poll);
    this.migration = offerMigration(this.device);
    if (this.migration.unavailable && this.device.spec.migration !== false) {
      this.log.info(`not offered for live migration: ${this.migration.unavailable}`);
    }
    this.listener = new Listener(path, (fd) => this.onConnection(fd), options);
    liveServers.add(this);
  }

  /** The connected client's session, if any. */
  get session(): Session | undefined {
    return this.current;
  }

  /**
   * Guest accesses that hit no register since the server started, per
   * place (region, offset, width, direction); the device's `unmodeled` collects them.
   */
  unmodeledAccesses(): UnmodeledReport {
    return this.device.unmodeled.report();
  }

  /** Stops listening, disconnects the client, releases the device. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    liveServers.delete(this);
    this.listener.close();
    for (const fd of this.waiting.splice(0)) native.close(fd);
    this.current?.close();
    this.device.dispose();
  }

  private onConnection(fd: number): void {
    if (this.closing) {
      native.close(fd);
    } else if (this.occupied) {
      // One client at a time, as with the C library: later ones wait their turn.
      if (this.waiting.length >= MAX_WAITING) {
        this.log.warn(`refusing a client: ${MAX_WAITING} already wait for the device`);
        native.close(fd);
      } else {
        this.log.info('client waits: another one is connected');
        this.waiting.push(fd);
      }
    } else {
      this.start(fd);
    }
  }

  private start(fd: number): void {
    this.occupied = true;
    this.log.info('client connected');
    this.current = new Session(this.device, this.migration, fd, this.limits, this.log, (s) => this.onSessionEnd(s), this.pollIdleMs);
    this.emit('connect', this.current);
  }

  /** The device is free again: serve the next waiting client, if any. */
  private release(): void {
    this.occupied = false;
    const next = this.waiting.shift();
    if (next !== undefined && !this.closing) this.start(next);
  }

  private onSessionEnd(session: Session): void {
    if (this.current !== session) return;
    this.current = undefined;
    this.log.info('client disconnected');
    void releaseDevice(this.device, session, this.log).then(() => {
      this.emit('disconnect', session);
      this.release();
    });
  }
}

/**
 * After a client left: drops its link and interrupts, resets the device
 * and calls its onDisconnect hook. Never rejects (failures are logged).
 */
export async function releaseDevice(device: Device, session: Session, log: Logger): Promise<void> {
  device.link = undefined;
  device.irqs.reset();
  try {
    await device.reset('disconnect');
  } catch (e) {
    log.error(`reset after disconnect failed: ${String(e)}`);
  }
  device.doorbellThreads?.disconnect();
  try {
    if (session.negotiated) device.spec.onDisconnect?.(device);
  } catch (e) {
    // A throwing device hook must not become an unhandled rejection.
    log.error(`onDisconnect failed: ${String(e)}`);
  }
}

/**
 * Debug logging traces every register access of the device by name: each
 * BAR or region built by `registers.bar()` and the config register table (unless the
 * map was given a log of its own), and unclaimed config bytes.
 */
function traceDevice(device: Device, log: Logger): void {
  device.traceLog = log;
  const prefixed = (prefix: string): Logger => ({ ...log, debug: (m) => log.debug(`${prefix} ${m}`) });
  for (const { where, map } of device.registerMaps) map.traceTo(prefixed(where));
}

/**
 * Builds a device from `spec` and serves it on `path`. Every option is
 * checked first: a wrong type or value throws a TypeError or RangeError
 * naming it, and no socket is created.
 */
export function serve(spec: DeviceSpec | Device, path: string, options?: ServeOptions): Server {
  return new Server(spec, path, options);
}
