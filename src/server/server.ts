/**
 * Serves one device on a UNIX socket path: accepts one client at a time,
 * and after a client leaves, drops its state, resets the device and waits
 * for the next. Many Servers can share one process.
 */
import { EventEmitter } from 'node:events';
import { native } from '../native/index.js';
import { Listener, type ListenOptions } from '../transport/listener.js';
import { Device } from './device.js';
import { consoleLogger, type Logger, type LogLevel } from './logger.js';
import { DEFAULT_LIMITS, Session, type ServerLimits } from './session.js';
import type { DeviceSpec } from './spec.js';

/** Options for {@link Server}. */
export interface ServeOptions extends ListenOptions {
  /** Limits offered at VERSION negotiation. */
  limits?: Partial<ServerLimits>;
  /** A logger, or the level for the default stderr logger (default 'warn'). */
  log?: Logger | LogLevel;
}

/** Serves a device over vfio-user on a socket path. */
export class Server extends EventEmitter {
  readonly device: Device;
  readonly log: Logger;
  private readonly listener: Listener;
  private readonly limits: ServerLimits;
  private current: Session | undefined;
  private closing = false;

  constructor(device: Device | DeviceSpec, readonly path: string, options: ServeOptions = {}) {
    super();
    this.device = device instanceof Device ? device : new Device(device);
    this.log = typeof options.log === 'object' ? options.log : consoleLogger(this.device.name, options.log ?? 'warn');
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.listener = new Listener(path, (fd) => this.onConnection(fd), options);
  }

  /** The connected client's session, if any. */
  get session(): Session | undefined {
    return this.current;
  }

  /** Stops listening, disconnects the client, releases the device. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.listener.close();
    this.current?.close();
    this.device.dispose();
  }

  private onConnection(fd: number): void {
    if (this.current || this.closing) {
      this.log.warn('refusing a second client: one is connected');
      native.close(fd);
      return;
    }
    this.log.info('client connected');
    this.current = new Session(this.device, fd, this.limits, this.log, (s) => this.onSessionEnd(s));
    this.emit('connect', this.current);
  }

  private onSessionEnd(session: Session): void {
    if (this.current !== session) return;
    this.current = undefined;
    const device = this.device;
    device.link = undefined;
    device.irqs.reset();
    this.log.info('client disconnected');
    device
      .reset('disconnect')
      .catch((e: unknown) => this.log.error(`reset after disconnect failed: ${String(e)}`))
      .finally(() => {
        try {
          if (session.negotiated) device.spec.onDisconnect?.(device);
        } catch (e) {
          // A throwing device hook must not become an unhandled rejection.
          this.log.error(`onDisconnect failed: ${String(e)}`);
        }
        this.emit('disconnect', session);
      });
  }
}

/** Builds a device from `spec` and serves it on `path`. */
export function serve(spec: DeviceSpec | Device, path: string, options?: ServeOptions): Server {
  return new Server(spec, path, options);
}
