/**
 * Serves one device isolated in a child process. This (parent) process
 * holds the listening socket and each accepted client connection for the
 * connection's whole life, and never runs device code. The child serves
 * the connection itself (it gets the fd). When the child dies or stops
 * answering, a successor takes the same connection over: the parent hands
 * it the connection's record (connection-record.ts) and the journal
 * (journal.ts). `reload()` does the same on purpose, with the current
 * code on disk.
 */
import { EventEmitter } from 'node:events';
import { native } from '../native/index.js';
import { consoleLogger, type Logger } from '../device/logger.js';
import { Listener, type ListenOptions } from '../transport/listener.js';
import type { ServerLimits } from '../server/context.js';
import { ChildHandle } from './child-handle.js';
import type { ChildMessage } from './control.js';
import { ConnectionRecord } from './connection-record.js';
import type { DeviceArg } from './device-arg.js';
import { Journal } from './journal.js';

/** Default time a child has to answer the watchdog's ping. */
export const DEFAULT_WATCHDOG_MS = 3000;
/** Clients that may wait while another one is connected (as the in-process Server). */
const MAX_WAITING = 4;
/** Time the old child has to quiesce for a reload, and the new one to take over. */
const HANDOVER_MS = 10_000;

/** Options of an isolated device. */
export interface IsolateOptions extends ListenOptions {
  /** The child's entry module: a file that calls runChild with a device loader. */
  entry: string;
  /** The children's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  verbose?: boolean;
  /** A child silent this long is killed and replaced (default {@link DEFAULT_WATCHDOG_MS}). */
  watchdogMs?: number;
  limits?: Partial<ServerLimits>;
  log?: Logger;
  /**
   * Keep a second child loaded and waiting (default true), so that a
   * crash is recovered in milliseconds instead of a process start (about
   * half a second). Costs that child's memory.
   */
  spare?: boolean;
}

/** One isolated device on one socket path. */
export class IsolatedServer extends EventEmitter {
  /** The device's name (known once the first child loaded it). */
  name = '';
  /** Children started to replace one that died or hung. */
  restarts = 0;
  private active!: ChildHandle;
  /** A child loaded and waiting to take over (see IsolateOptions.spare). */
  private spare: ChildHandle | undefined;
  private readonly journal: Journal;
  private readonly record = new ConnectionRecord();
  private listener: Listener | undefined;
  /** This process's copy of the live connection's fd. */
  private connection: number | undefined;
  /** True once a child was given the live connection (a successor then adopts it). */
  private connectionStarted = false;
  private readonly waiting: number[] = [];
  private closing = false;
  private reloading: Promise<void> | undefined;
  /** The child a reload under way started, until it serves or is dropped (close() ends it too). */
  private incoming: ChildHandle | undefined;
  private readonly log: Logger;

  private constructor(
    readonly device: DeviceArg,
    readonly path: string,
    private readonly options: IsolateOptions,
  ) {
    super();
    this.log = options.log ?? consoleLogger(device.device, options.verbose ? 'debug' : 'info');
    this.journal = Journal.create(device.device);
  }

  /** Loads the device in a child, then listens. Rejects (nothing left behind) when the device does not load. */
  static async start(device: DeviceArg, path: string, options: IsolateOptions): Promise<IsolatedServer> {
    const s = new IsolatedServer(device, path, options);
    try {
      s.active = s.spawn();
      const ready = await s.active.ready;
      s.name = ready.name;
      if (!ready.checkpointed) s.log.warn(`not checkpointed (${ready.why}): after a crash the device starts from reset`);
      s.log.info(`child ${s.active.pid} serves ${path}`);
      s.listener = new Listener(path, (fd) => s.onConnection(fd), options);
      s.replaceSpare();
    } catch (e) {
      s.close();
      throw e;
    }
    return s;
  }

  /** The pid of the child serving the device now. */
  get childPid(): number | undefined {
    return this.active.pid;
  }

  /** Bytes the serving child read from the client and has not answered yet (the journal's rx log), for tests and monitoring. */
  get unansweredBytes(): number {
    return this.journal.rx.end - this.journal.rx.start;
  }

  /** Bytes of replies the serving child queued and the client has not taken yet (the journal's tx log), for tests and monitoring. */
  get unsentReplyBytes(): number {
    return this.journal.tx.end - this.journal.tx.start;
  }

  /** Resolves once a spare child is loaded and waiting (at once without spares). */
  async standby(): Promise<void> {
    while (this.options.spare !== false && !this.closing) {
      const spare = this.spare;
      if (spare && (await spare.ready.then(() => true, () => false)) && spare === this.spare) return;
      if (!spare) this.replaceSpare();
    }
  }

  /** Stops listening, disconnects the client, ends the child. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.listener?.close();
    for (const fd of this.waiting.splice(0)) native.close(fd);
    for (const child of [this.active, this.spare, this.incoming]) {
      if (!child) continue;
      child.retired = true;
      child.kill();
    }
    this.endConnection();
    native.close(this.journal.fd);
  }

  /**
   * Replaces the child with a fresh one running the device's code as it is
   * on disk now. The old one quiesces and hands its state over (its
   * migration save). A new version that does not load, or fails to take
   * over, is dropped and the old one keeps serving: the promise rejects
   * with why.
   */
  reload(): Promise<void> {
    this.reloading ??= this.doReload().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async doReload(): Promise<void> {
    const next = this.spawn();
    this.incoming = next;
    try {
      await this.handOver(next);
    } finally {
      this.incoming = undefined;
    }
  }

  private async handOver(next: ChildHandle): Promise<void> {
    try {
      await next.ready;
    } catch (e) {
      next.retired = true;
      next.kill();
      throw new Error(`the new version did not load: ${(e as Error).message}`);
    }
    const old = this.active;
    if (this.connection !== undefined && this.connectionStarted && !old.isGone) {
      old.send({ type: 'quiesce' });
      const q = await old.expect('quiesced', HANDOVER_MS).catch((e: Error) => ({ type: 'quiesced' as const, error: e.message }));
      if (q.type === 'quiesced' && q.error !== undefined) {
        next.retired = true;
        next.kill();
        // It serves on (a late quiesce of its own is cancelled by this).
        if (!old.isGone) old.send({ type: 'resume' });
        throw new Error(`the device did not quiesce: ${q.error}`);
      }
      const answer = this.adopt(next, 'reload');
      const m = await next.expect('adopted', HANDOVER_MS, 'adopt-failed').catch((e: Error) => ({ type: 'adopt-failed' as const, message: e.message }));
      await answer;
      if (m.type === 'adopt-failed') {
        next.retired = true;
        next.kill();
        old.send({ type: 'resume' });
        throw new Error(`the new version failed to take over: ${(m as { message: string }).message}`);
      }
    }
    old.retired = true;
    this.active = next;
    if (!old.isGone) old.send({ type: 'exit' });
    this.log.info(`reloaded: pid ${next.pid} serves now`);
    this.replaceSpare();
    this.emit('reload', next.pid);
  }

  private spawn(): ChildHandle {
    return new ChildHandle({
      entry: this.options.entry,
      env: this.options.env,
      device: this.device,
      verbose: this.options.verbose ?? false,
      limits: this.options.limits,
      journalFd: this.journal.fd,
      watchdogMs: this.options.watchdogMs ?? DEFAULT_WATCHDOG_MS,
      onMessage: (child, m, fds) => this.onChildMessage(child, m, fds),
      onGone: (child, why) => this.onChildGone(child, why),
    });
  }

  private onConnection(fd: number): void {
    if (this.closing) return void native.close(fd);
    if (this.connection !== undefined) {
      if (this.waiting.length >= MAX_WAITING) {
        this.log.warn(`refusing a client: ${MAX_WAITING} already wait for the device`);
        native.close(fd);
      } else this.waiting.push(fd);
      return;
    }
    // The child peeks before it consumes (rx-socket.ts): peeks go on from the socket's peek offset.
    const rc = native.setPeekOffset(fd, 0);
    if (rc < 0) {
      this.log.error(`refusing a client: cannot set the socket's peek offset (errno ${-rc})`);
      native.close(fd);
      return this.serveNext();
    }
    this.connection = fd;
    this.connectionStarted = false;
    this.record.clear();
    void this.active.ready.then(
      () => this.serveConnection(),
      () => undefined,
    );
  }

  /** Gives the live connection to the active child, from the start. */
  private serveConnection(): void {
    if (this.connection === undefined || this.connectionStarted || this.active.isGone) return;
    this.connectionStarted = true;
    this.active.send({ type: 'serve' }, [this.connection]);
  }

  /** Sends `child` what it needs to take the live connection over, then the connection. */
  private adopt(child: ChildHandle, reason: 'crash' | 'reload'): void {
    for (const r of this.record.requests()) child.send({ type: 'record', request: r.request.toString('base64') }, r.fds);
    for (const [tag, fds] of this.record.heldFds()) child.send({ type: 'held', tag }, fds);
    for (const [region, fds] of this.record.doorbellsByRegion()) child.send({ type: 'doorbells', region }, fds);
    for (const [region, fds] of this.record.regionMemoryByRegion()) child.send({ type: 'region-memory', region }, fds);
    child.send({ type: 'adopt', reason }, [this.connection!]);
  }

  private onChildMessage(child: ChildHandle, m: ChildMessage, fds: number[]): void {
    if (child !== this.active && m.type !== 'held' && m.type !== 'commit' && m.type !== 'release' && m.type !== 'doorbells' && m.type !== 'region-memory') {
      for (const fd of fds) native.close(fd);
      return;
    }
    switch (m.type) {
      case 'held':
        return this.record.hold(m.tag, fds);
      case 'commit':
        return this.record.commit(m.tag, Buffer.from(m.request, 'base64'));
      case 'release':
        return this.record.release(m.tag);
      case 'doorbells':
        return this.record.doorbells(m.region, fds);
      case 'region-memory':
        return this.record.regionMemory(m.region, fds);
      case 'irq-reset':
        return this.record.dropIrqs();
      case 'ended':
        this.endConnection();
        return this.serveNext();
      default:
        for (const fd of fds) native.close(fd);
    }
  }

  private endConnection(): void {
    if (this.connection !== undefined) native.close(this.connection);
    this.connection = undefined;
    this.connectionStarted = false;
    this.record.clear();
  }

  private serveNext(): void {
    const next = this.waiting.shift();
    if (next !== undefined && !this.closing) this.onConnection(next);
  }

  /** Starts a new spare child (the current one, if any, may run old code). */
  private replaceSpare(): void {
    if (this.options.spare === false || this.closing) return;
    if (this.spare) {
      this.spare.retired = true;
      this.spare.kill();
    }
    this.spare = this.spawn();
  }

  private onChildGone(child: ChildHandle, why: string): void {
    if (child === this.spare) {
      this.spare = undefined;
      if (!child.retired && !this.closing) this.log.warn(`spare child ${child.pid} ${why}`);
      return;
    }
    if (child.retired || this.closing || child !== this.active) return;
    this.restarts++;
    const since = performance.now();
    const next = this.spare ?? this.spawn();
    this.spare = undefined;
    this.log.warn(`child ${child.pid} ${why}: ${next.pid} takes over`);
    this.active = next;
    next.ready.then(() => this.replaceSpare(), () => undefined);
    next.ready.then(
      () => {
        if (this.connection !== undefined && this.connectionStarted) {
          this.adopt(next, 'crash');
          void next.expect('adopted', HANDOVER_MS).then(
            () => this.emit('recovered', { pid: next.pid, ms: performance.now() - since }),
            () => undefined,
          );
        } else {
          this.serveConnection();
          this.emit('recovered', { pid: next.pid, ms: performance.now() - since });
        }
      },
      (e: Error) => this.log.error(`the successor did not load: ${e.message}`),
    );
  }
}
