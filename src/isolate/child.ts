/**
 * The child process of an isolated device: loads the device, serves the
 * connection the parent hands it (its fd) with the ordinary Session, and
 * keeps the parent able to hand that connection to a successor: fds and
 * connection-configuring requests go to the parent before their replies,
 * the stream and the device's checkpoint go to the journal.
 */
import { Device } from '../device/device.js';
import type { DeviceSpec } from '../device/spec.js';
import { consoleLogger, type Logger } from '../device/logger.js';
import { offerMigration, type MigrationOffer } from '../migration/offer.js';
import { Command, HEADER_SIZE, HeaderFlag } from '../protocol/constants.js';
import { REGION_ACCESS_SIZE } from '../protocol/region-access.js';
import { decodeHeader, encodeErrorReply } from '../protocol/header.js';
import { Errno } from '../device/errors.js';
import { dispatch } from '../server/dispatch.js';
import { releaseDevice } from '../server/server.js';
import { DEFAULT_LIMITS, Session, type ServerLimits } from '../server/session.js';
import { closeAll } from '../transport/channel.js';
import { changesState, loadCheckpoint, saveNow } from './checkpoint.js';
import { ControlLink, type ChildMessage, type ParentMessage } from './control.js';
import type { DeviceArg } from './device-arg.js';
import { Journal } from './journal.js';
import { JournaledTransport, type ReplayDecision } from './journaled-transport.js';

/** Loads a device in the child (the CLI's loader: samples and device files). */
export type DeviceLoader = (arg: DeviceArg, verbose: boolean) => Promise<DeviceSpec | Device>;

/** Requests whose effect is on the connection, which the parent records to replay to a successor. */
const RECORDED: ReadonlySet<number> = new Set([Command.VERSION, Command.DMA_MAP, Command.DMA_UNMAP, Command.DEVICE_SET_IRQS]);

/** A request in flight when this many children in a row died is failed rather than served again. */
const MAX_REPLAYS = 1;

/** The fd the parent passes the control socket on. */
export const CONTROL_FD = 3;

interface Loaded {
  device: Device;
  migration: MigrationOffer;
  log: Logger;
  limits: ServerLimits;
  pollIdleMs: number;
  journal: Journal;
  checkpointed: boolean;
}

/** Runs the child: answers the parent on CONTROL_FD until told to leave. */
export function runChild(load: DeviceLoader): void {
  let loaded: Loaded | undefined;
  let session: Session | undefined;
  let transport: JournaledTransport | undefined;
  const records: { request: Buffer; fds: number[] }[] = [];
  const held = new Map<number, number[]>();
  /** Doorbell eventfds the client holds, by region, handed over for a successor to serve. */
  const doorbells = new Map<number, number[]>();
  /** Region memfds the client maps, by region, handed over for a successor to serve. */
  const regionMemory = new Map<number, number>();
  /** Bumped by each quiesce and resume: a quiesce overtaken by a resume stops where it is. */
  let quiesceRound = 0;
  /** Tags of frames whose fds the parent holds. */
  const heldAtParent = new Set<number>();
  /** Requests to record, by tag, until answered. */
  const recordable = new Map<number, Buffer>();
  /** REGION_WRITEs inside the device's checkpointFreeWrites, by tag, until answered. */
  const uncheckpointed = new Set<number>();
  let warnedSave = false;

  const control = new ControlLink<ParentMessage, ChildMessage>(
    CONTROL_FD,
    (m, fds) => {
      void onMessage(m, fds).catch((e: unknown) => {
        // Anything unexpected here: die, and let the parent start a successor.
        process.stderr.write(`muser: isolated child failed: ${(e as Error).stack ?? String(e)}\n`);
        process.exit(70);
      });
    },
    () => process.exit(0), // the parent is gone
  );

  async function onMessage(m: ParentMessage, fds: number[]): Promise<void> {
    switch (m.type) {
      case 'init':
        return init(m, fds[0]);
      case 'ping':
        control.send({ type: 'pong', n: m.n });
        return;
      case 'serve':
        loaded!.journal.clear();
        loaded!.device.persistent = loaded!.journal.persistent;
        startSession(fds[0]);
        transport!.start(() => ({ serve: true }), new Map());
        return;
      case 'record':
        records.push({ request: Buffer.from(m.request, 'base64'), fds });
        return;
      case 'held':
        held.set(m.tag, fds);
        return;
      case 'doorbells':
        closeAll(doorbells.get(m.region));
        doorbells.set(m.region, fds);
        return;
      case 'region-memory': {
        const old = regionMemory.get(m.region);
        if (old !== undefined) closeAll([old]);
        if (fds.length === 1) regionMemory.set(m.region, fds[0]);
        else closeAll(fds);
        return;
      }
      case 'adopt':
        return adopt(fds[0], m.reason);
      case 'quiesce':
        return quiesce();
      case 'resume':
        return resume();
      case 'exit':
        transport?.abandon();
        process.exit(0);
    }
  }

  async function init(m: Extract<ParentMessage, { type: 'init' }>, journalFd: number): Promise<void> {
    let device: Device;
    try {
      const spec = await load(m.device, m.verbose);
      device = spec instanceof Device ? spec : new Device(spec);
    } catch (e) {
      control.send({ type: 'load-failed', message: (e as Error).message ?? String(e) });
      return;
    }
    const log = consoleLogger(device.name, m.verbose ? 'debug' : 'info');
    const migration = offerMigration(device);
    const checkpointed = migration.unavailable === undefined;
    loaded = {
      device,
      migration,
      log,
      limits: { ...DEFAULT_LIMITS, ...m.limits },
      pollIdleMs: m.device.pollIdleMs ?? 0,
      journal: Journal.open(journalFd),
      checkpointed,
    };
    // The client sets interrupts again after a reset: the parent forgets those it recorded.
    device.addResetListener(() => {
      if (session && !session.channel.isClosed) control.send({ type: 'irq-reset' });
    });
    control.send({ type: 'ready', name: device.name, checkpointed, why: migration.unavailable });
  }

  function startSession(fd: number): Session {
    const l = loaded!;
    const hooks = {
      held(tag: number, fds: readonly number[]): void {
        heldAtParent.add(tag);
        control.send({ type: 'held', tag }, fds);
      },
      beforeAnswer(tag: number, command: number, reply: Buffer | undefined, fds: readonly number[] | undefined): void {
        const request = recordable.get(tag);
        recordable.delete(tag);
        const failed = reply !== undefined && (reply.readUInt32LE(8) & HeaderFlag.ERROR) !== 0;
        if (request && !failed) control.send({ type: 'commit', tag, request: request.toString('base64') });
        else if (heldAtParent.has(tag)) control.send({ type: 'release', tag });
        // The client will write these doorbells for the connection's life: the parent keeps them for a successor.
        if (command === Command.DEVICE_GET_REGION_IO_FDS && !failed && fds && fds.length > 0 && reply && reply.length >= HEADER_SIZE + 16) {
          control.send({ type: 'doorbells', region: reply.readUInt32LE(HEADER_SIZE + 8) }, fds);
        }
        // The client may map this memory and store into it (doorbells) for the connection's life: the same, so a successor serves it.
        if (command === Command.DEVICE_GET_REGION_INFO && !failed && fds && fds.length === 1 && reply && reply.length >= HEADER_SIZE + 12) {
          control.send({ type: 'region-memory', region: reply.readUInt32LE(HEADER_SIZE + 8) }, fds);
        }
        heldAtParent.delete(tag);
        const free = uncheckpointed.delete(tag);
        if (l.checkpointed && changesState(command) && !failed && !free) checkpoint(tag, reply);
      },
    };
    const s = new Session(
      l.device,
      l.migration,
      (handlers, max) => {
        const onFrame = handlers.onFrame;
        const wrapped = {
          ...handlers,
          onFrame(f: Parameters<typeof onFrame>[0] & { tag?: number }): void {
            const command = f.bytes.length >= 4 ? f.bytes.readUInt16LE(2) : -1;
            if (f.tag !== undefined && RECORDED.has(command)) recordable.set(f.tag, Buffer.from(f.bytes));
            if (f.tag !== undefined && command === Command.REGION_WRITE && isCheckpointFree(l.device, f.bytes)) uncheckpointed.add(f.tag);
            onFrame(f);
          },
        };
        transport = new JournaledTransport(fd, wrapped, max, l.journal, hooks);
        return transport;
      },
      l.limits,
      l.log,
      (ended) => {
        if (session !== ended) return;
        session = undefined;
        recordable.clear();
        uncheckpointed.clear();
        void releaseDevice(l.device, ended, l.log).then(() => control.send({ type: 'ended' }));
      },
      l.pollIdleMs,
    );
    session = s;
    return s;
  }

  function checkpoint(tag: number, reply: Buffer | undefined): void {
    const l = loaded!;
    try {
      l.device.spec.onCheckpoint?.(l.device);
    } catch (e) {
      l.log.error(`onCheckpoint failed: ${String(e)}`);
    }
    const chunks = saveNow(l.device);
    if (chunks && l.journal.writeCheckpoint(tag, reply, chunks)) return;
    if (!warnedSave) l.log.warn(chunks ? 'checkpoint too large for the journal: a crash resets the device' : 'migration save is asynchronous: checkpoints are not taken, a crash resets the device');
    warnedSave = true;
  }

  async function adopt(fd: number, reason: 'crash' | 'reload'): Promise<void> {
    const l = loaded!;
    // The memory the client maps, served from now on in place of this process's own: it holds the newest bytes
    // (the guest's stores since the predecessor died included). Watched only once the device is recovered.
    const adopted = new Set<number>();
    for (const [region, memfd] of regionMemory) {
      regionMemory.delete(region);
      try {
        l.device.adoptRegionMemory(region, memfd);
        adopted.add(region);
      } catch (e) {
        closeAll([memfd]);
        const why = `cannot serve the memory the client maps: ${(e as Error).message}`;
        // A reload fails (the old code serves on); after a crash the device serves its own memory, which the client's mapping misses.
        if (reason === 'reload') {
          closeAll([...regionMemory.values()]);
          control.send({ type: 'adopt-failed', message: why });
          process.exit(1);
        }
        l.log.error(why);
      }
    }
    l.device.holdWatching(true);
    const s = startSession(fd);
    try {
      for (const r of records.splice(0)) {
        const header = decodeHeader(r.request);
        const result = await dispatch(s, { header, payload: r.request.subarray(16, header.size), fds: r.fds });
        closeAll(r.fds);
        if (result && !Buffer.isBuffer(result)) result.after?.();
      }
      const cp = l.checkpointed ? l.journal.readCheckpoint() : undefined;
      if (cp) {
        try {
          await loadCheckpoint(l.device, cp.state, adopted);
        } catch (e) {
          if (reason === 'reload') throw e;
          l.log.error(`checkpoint did not load (${(e as Error).message}): the device starts from reset`);
          await l.device.reset('client');
        }
      } else if (reason === 'crash') {
        l.log.warn(`recovered without a checkpoint: the device starts from reset${l.checkpointed ? '' : ` (${l.migration.unavailable})`}`);
      }
      l.device.persistent = l.journal.persistent;
      try {
        await l.device.spec.onRecover?.(l.device, reason);
      } catch (e) {
        // A reload fails (the old code serves on); after a crash, dying too would only start the next successor on the same.
        if (reason === 'reload') throw e;
        l.log.error(`onRecover failed: ${(e as Error).message}: the device serves on as it is`);
      }
      // The doorbells the client holds, watched only now: what was written meanwhile waits in them.
      for (const [region, fds] of doorbells) s.ioEventFds.adopt(region, fds);
      doorbells.clear();
      // The same for the memory the client maps: a store no process saw (while none watched) is seen now.
      l.device.holdWatching(false);
    } catch (e) {
      control.send({ type: 'adopt-failed', message: (e as Error).message ?? String(e) });
      transport?.abandon();
      process.exit(1);
    }
    let first = true;
    const decide = (tag: number, bytes: Buffer): ReplayDecision => {
      const cp = l.journal.readCheckpoint();
      if (cp && l.checkpointed && tag <= cp.appliedTag) return { serve: false, reply: tag === cp.appliedTag ? cp.reply : undefined };
      // The first request served again is the one the last child was in: twice means it is what kills them.
      const isFirst = first;
      first = false;
      if (isFirst && l.journal.countReplay(tag) > MAX_REPLAYS) {
        l.log.error(`request ${bytes.readUInt16LE(2)} (msg ${bytes.readUInt16LE(0)}) was in flight when ${MAX_REPLAYS} children in a row died: failing it with EIO`);
        const flags = bytes.readUInt32LE(8);
        return { serve: false, reply: flags & HeaderFlag.NO_REPLY ? undefined : encodeErrorReply(bytes.readUInt16LE(0), bytes.readUInt16LE(2), Errno.EIO) };
      }
      return { serve: true };
    };
    if (l.journal.lost) {
      // A log overflowed: which bytes were answered is unknown, and guessing would desynchronise the stream.
      l.log.error('the journal overflowed: the connection cannot be taken over exactly, closing it');
      transport!.close(new Error('journal overflowed'));
      control.send({ type: 'adopted' });
      return;
    }
    const heldNow = new Map(held);
    held.clear();
    for (const tag of heldNow.keys()) heldAtParent.add(tag);
    transport!.start(decide, heldNow);
    control.send({ type: 'adopted' });
  }

  async function quiesce(): Promise<void> {
    const t = transport;
    const round = ++quiesceRound;
    if (t && !t.isClosed) {
      const l = loaded!;
      try {
        // Work that does not come in messages (a device's rings) first, while the client's replies to its DMA still come in.
        await l.device.spec.onQuiesce?.(l.device);
      } catch (e) {
        if (round === quiesceRound) control.send({ type: 'quiesced', error: (e as Error).message ?? String(e) });
        return;
      }
      if (round !== quiesceRound) return;
      // Nor send: the successor sends what waits (the tx log), and this process sending it too would send it twice.
      t.freeze(true);
      // The doorbells too: the successor watches the same eventfds (and memory), and what this process took would be lost to it.
      session?.ioEventFds.pause(true);
      l.device.holdWatching(true);
      // What is in flight finishes (the parent's watchdog bounds a callback that never does).
      while (t.inFlight > 0 && !t.isClosed) await new Promise((r) => setTimeout(r, 1));
      if (round !== quiesceRound) return;
      if (l.checkpointed) checkpoint(-1, undefined);
    }
    control.send({ type: 'quiesced' });
  }

  /** The hand-over failed (or gave up waiting): serve on. */
  function resume(): void {
    quiesceRound++;
    transport?.freeze(false);
    session?.ioEventFds.pause(false);
    const l = loaded;
    if (!l) return;
    l.device.holdWatching(false);
    try {
      l.device.spec.onResume?.(l.device);
    } catch (e) {
      l.log.error(`onResume failed: ${String(e)}`);
    }
  }
}

/** True when the REGION_WRITE in `frame` lies wholly in one of the device's checkpointFreeWrites ranges. */
function isCheckpointFree(device: Device, frame: Buffer): boolean {
  const ranges = device.spec.checkpointFreeWrites;
  if (!ranges || frame.length < HEADER_SIZE + REGION_ACCESS_SIZE) return false;
  const offset = Number(frame.readBigUInt64LE(HEADER_SIZE));
  const region = frame.readUInt32LE(HEADER_SIZE + 8);
  const count = frame.readUInt32LE(HEADER_SIZE + 12);
  return ranges.some((r) => r.region === region && offset >= r.offset && offset + count <= r.offset + r.length);
}
