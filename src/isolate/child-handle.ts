/**
 * The parent's handle on one child process: spawns it with the control
 * socket as fd 3, loads the device in it, and watches it (the watchdog
 * pings it over the control socket; a child that does not answer in time
 * is killed). `onGone` is called once when the child is gone for any
 * reason: after its last control message has been read.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { native } from '../native/index.js';
import { ControlLink, type ChildMessage, type ParentMessage } from './control.js';
import type { DeviceArg } from './device-arg.js';
import type { ServerLimits } from '../server/context.js';

/** How a child is started. */
export interface ChildOptions {
  /** The child's entry module (it calls runChild). */
  entry: string;
  /** The child's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  device: DeviceArg;
  verbose: boolean;
  limits?: Partial<ServerLimits>;
  /** The journal memfd, handed to the child. */
  journalFd: number;
  /** A child that does not answer a ping within this many ms is killed. */
  watchdogMs: number;
  onMessage(child: ChildHandle, m: ChildMessage, fds: number[]): void;
  onGone(child: ChildHandle, why: string): void;
}

/** What a child says once it loaded the device. */
export interface ChildReady {
  name: string;
  checkpointed: boolean;
  why?: string;
}

/** One child process. */
export class ChildHandle {
  readonly process: ChildProcess;
  /** Resolves once the device is loaded; rejects with the load's error. */
  readonly ready: Promise<ChildReady>;
  /** Set when the parent means the child to go: its end is no crash. */
  retired = false;
  private readonly control: ControlLink<ChildMessage, ParentMessage>;
  private gone = false;
  private pingTimer: NodeJS.Timeout | undefined;
  private lastAnswer = Date.now();
  private pingSeq = 0;
  private settleReady!: { resolve(r: ChildReady): void; reject(e: Error): void };
  private waiters = new Map<string, { resolve(m: ChildMessage): void; reject(e: Error): void }>();
  private exitWhy = 'control socket closed';

  constructor(private readonly options: ChildOptions) {
    const [parentEnd, childEnd] = native.socketpair();
    this.process = spawn(process.execPath, [options.entry], { stdio: ['ignore', 'inherit', 'inherit', childEnd], env: options.env });
    native.close(childEnd);
    this.process.on('exit', (code, signal) => {
      this.exitWhy = signal ? `killed by ${signal}` : `exited with code ${code}`;
    });
    this.process.on('error', (e) => this.finish(`could not start: ${e.message}`));
    this.ready = new Promise<ChildReady>((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => undefined);
    this.control = new ControlLink<ChildMessage, ParentMessage>(
      parentEnd,
      (m, fds) => this.onMessage(m, fds),
      () => this.finish(),
    );
    this.control.send({ type: 'init', device: options.device, verbose: options.verbose, limits: options.limits }, [options.journalFd]);
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  get isGone(): boolean {
    return this.gone;
  }

  /** Sends a message (fds borrowed). */
  send(m: ParentMessage, fds?: readonly number[]): void {
    this.control.send(m, fds);
  }

  /** Waits for the child's next message of `type` (rejects if the child goes first, or after `timeoutMs`). */
  expect<T extends ChildMessage['type']>(type: T, timeoutMs: number, ...alt: ChildMessage['type'][]): Promise<ChildMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        for (const t of [type, ...alt]) this.waiters.delete(t);
        reject(new Error(`child did not answer ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      const w = {
        resolve: (m: ChildMessage): void => {
          clearTimeout(timer);
          for (const t of [type, ...alt]) this.waiters.delete(t);
          resolve(m);
        },
        reject: (e: Error): void => {
          clearTimeout(timer);
          reject(e);
        },
      };
      for (const t of [type, ...alt]) this.waiters.set(t, w);
    });
  }

  /** Kills the child at once (SIGKILL). */
  kill(): void {
    if (this.process.exitCode === null && this.process.signalCode === null) this.process.kill('SIGKILL');
  }

  private onMessage(m: ChildMessage, fds: number[]): void {
    this.lastAnswer = Date.now();
    if (m.type === 'ready') {
      this.settleReady.resolve(m);
      this.startWatchdog();
      return;
    }
    if (m.type === 'load-failed') {
      this.settleReady.reject(new Error(m.message));
      return;
    }
    if (m.type === 'pong') return;
    const waiter = this.waiters.get(m.type);
    if (waiter) return waiter.resolve(m);
    this.options.onMessage(this, m, fds);
  }

  private startWatchdog(): void {
    const every = Math.max(5, Math.min(500, Math.floor(this.options.watchdogMs / 4)));
    this.pingTimer = setInterval(() => {
      const silent = Date.now() - this.lastAnswer;
      if (silent > this.options.watchdogMs) {
        this.exitWhy = `did not answer the watchdog for ${silent} ms: killed`;
        this.kill();
        clearInterval(this.pingTimer);
        return;
      }
      this.control.send({ type: 'ping', n: ++this.pingSeq });
    }, every);
    this.pingTimer.unref();
  }

  private finish(why?: string): void {
    if (this.gone) return;
    this.gone = true;
    clearInterval(this.pingTimer);
    if (why) this.exitWhy = why;
    this.kill();
    if (!this.control.isClosed) this.control.close();
    const e = new Error(`child ${this.exitWhy}`);
    this.settleReady.reject(e);
    for (const w of new Set(this.waiters.values())) w.reject(e);
    this.waiters.clear();
    // The exit status comes a moment after the socket closes: report with it when it is there.
    queueMicrotask(() => this.options.onGone(this, this.exitWhy));
  }
}
