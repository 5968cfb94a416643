/**
 * Deliberately broken vfio-user servers, to prove that each `muser check`
 * check can fail. Each is the real `counter` sample served in this process
 * behind an interposer that breaks exactly one rule: it rewrites one kind
 * of request or reply, drops a reply, or dies on one kind of input. With
 * no rule broken the interposer is transparent.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, type Server } from '../../src/index.js';
import { counterDevice } from '../../src/samples/counter.js';
import { Channel, closeAll } from '../../src/transport/channel.js';
import { Listener } from '../../src/transport/listener.js';
import { connectNow } from '../../src/transport/connect.js';
import { native, PollEvent, PollMode } from '../../src/native/index.js';
import { Command, Errno, FeatureId, HeaderFlag, IrqIndex, MigrationState, RegionIndex } from '../../src/protocol/constants.js';
import { decodeVersion, encodeVersion, type VersionCapabilities } from '../../src/protocol/version.js';

const P = 16; // payload offset

/** What a rule sees of one message, and what it may do about it. */
export interface Message {
  dir: 'c>s' | 's>c';
  bytes: Buffer;
  fds: number[];
  command: number;
  isReply: boolean;
  isError: boolean;
  /** For replies: the request they answer. */
  request?: Buffer;
  /** Per-connection memory of a rule. */
  state: Map<string, unknown>;
}

/** Forward `bytes` (possibly changed), drop (null), or 'die': the whole server goes away. */
export type Verdict = Buffer | null | 'die';

/** A broken server: which checks it must fail, and how it breaks. */
export interface BrokenServer {
  name: string;
  /** Ids of checks this server must fail. */
  fails: string[];
  rule(m: Message): Verdict;
  /** The interposer's own framing rejected the client's bytes (header size < 16 or huge). */
  onUntrustedHeader?: 'die';
}

/** A success reply with `payload` in place of an error reply. */
function success(m: Message, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(P + payload.length);
  m.bytes.copy(out, 0, 0, 4);
  out.writeUInt32LE(out.length, 4);
  out.writeUInt32LE(HeaderFlag.REPLY, 8);
  payload.copy(out, P);
  return out;
}

/** An error reply with `errno` in place of whatever the server said. */
function failure(m: Message, errno: number): Buffer {
  const out = Buffer.alloc(P);
  m.bytes.copy(out, 0, 0, 4);
  out.writeUInt32LE(P, 4);
  out.writeUInt32LE(HeaderFlag.REPLY | HeaderFlag.ERROR, 8);
  out.writeUInt32LE(errno, 12);
  return out;
}

const is = (m: Message, command: number, dir: Message['dir'], reply: boolean): boolean => m.command === command && m.dir === dir && m.isReply === reply;
const request = (m: Message, command: number): boolean => is(m, command, 'c>s', false);
const reply = (m: Message, command: number): boolean => is(m, command, 's>c', true);
/** A copy with a u32 changed. */
function with32(b: Buffer, offset: number, value: number): Buffer {
  const out = Buffer.from(b);
  out.writeUInt32LE(value >>> 0, offset);
  return out;
}
/** For region accesses: region, offset, count of the request this message is or answers. */
function access(m: Message): { region: number; offset: number; count: number } {
  const r = m.isReply ? m.request! : m.bytes;
  return { region: r.readUInt32LE(P + 8), offset: Number(r.readBigUInt64LE(P)), count: r.readUInt32LE(P + 12) };
}
/** Replaces error replies to `command` with successes. */
const acceptsWhatIsRefused = (name: string, fails: string, command: number): BrokenServer => ({
  name,
  fails: [fails],
  rule: (m) => (reply(m, command) && m.isError ? success(m, m.request!.subarray(P)) : m.bytes),
});

/** For DMA_MAP requests and their replies: the request's offset, address and size, full 64-bit. */
function mapRange(m: Message): { offset: bigint; address: bigint; size: bigint } {
  const r = m.isReply ? m.request! : m.bytes;
  return { offset: r.readBigUInt64LE(P + 8), address: r.readBigUInt64LE(P + 16), size: r.readBigUInt64LE(P + 24) };
}
/** Replaces error replies to DMA_MAP requests that `bad` picks with successes. */
const mapsWhatIsRefused = (name: string, fails: string, bad: (r: ReturnType<typeof mapRange>) => boolean): BrokenServer => ({
  name,
  fails: [fails],
  rule: (m) => (reply(m, Command.DMA_MAP) && m.isError && bad(mapRange(m)) ? success(m) : m.bytes),
});
/** The VERSION reply re-encoded with its capabilities changed by `edit`. */
function editVersion(m: Message, edit: (caps: VersionCapabilities) => void): Buffer {
  const v = decodeVersion(m.bytes.subarray(P));
  edit(v.capabilities);
  const payload = encodeVersion(v);
  const out = Buffer.alloc(P + payload.length);
  m.bytes.copy(out, 0, 0, P);
  out.writeUInt32LE(out.length, 4);
  payload.copy(out, P);
  return out;
}

/** Every broken server. */
export const BROKEN_SERVERS: BrokenServer[] = [
  { name: 'answers version 1.0', fails: ['negotiation.version'], rule: (m) => (reply(m, Command.VERSION) && !m.isError ? (() => { const b = Buffer.from(m.bytes); b.writeUInt16LE(1, P); return b; })() : m.bytes) },
  {
    name: 'accepts VERSION 1.0',
    fails: ['negotiation.bad-major'],
    rule: (m) => (request(m, Command.VERSION) && m.bytes.readUInt16LE(P) === 1 ? (() => { const b = Buffer.from(m.bytes); b.writeUInt16LE(0, P); return b; })() : m.bytes),
  },
  {
    name: 'answers commands before VERSION',
    fails: ['negotiation.command-before-version'],
    rule(m) {
      if (m.command === Command.VERSION) m.state.set('negotiated', true);
      if (reply(m, Command.DEVICE_GET_INFO) && m.isError && !m.state.get('negotiated')) {
        const info = Buffer.alloc(16);
        info.writeUInt32LE(16, 0);
        info.writeUInt32LE(3, 4);
        info.writeUInt32LE(9, 8);
        info.writeUInt32LE(5, 12);
        return success(m, info);
      }
      return m.bytes;
    },
  },
  { name: 'is not a PCI device', fails: ['device.info'], rule: (m) => (reply(m, Command.DEVICE_GET_INFO) && !m.isError ? with32(m.bytes, P + 4, 1) : m.bytes) },
  {
    name: 'takes DEVICE_GET_INFO with argsz 8',
    fails: ['device.info-small-argsz'],
    rule: (m) => (request(m, Command.DEVICE_GET_INFO) && m.bytes.readUInt32LE(P) < 16 ? with32(m.bytes, P, 16) : m.bytes),
  },
  {
    name: 'names the wrong region',
    fails: ['regions.info'],
    rule: (m) => (reply(m, Command.DEVICE_GET_REGION_INFO) && !m.isError && m.bytes.readUInt32LE(P + 8) === 2 ? with32(m.bytes, P + 8, 3) : m.bytes),
  },
  {
    name: 'has a BAR of 5000 bytes',
    fails: ['regions.info'],
    rule: (m) => (reply(m, Command.DEVICE_GET_REGION_INFO) && !m.isError && m.bytes.readUInt32LE(P + 8) === 0 ? with32(m.bytes, P + 16, 5000) : m.bytes),
  },
  {
    name: 'answers region info for any index',
    fails: ['regions.info-bad-index'],
    rule: (m) => (request(m, Command.DEVICE_GET_REGION_INFO) && m.bytes.readUInt32LE(P + 8) >= 100 ? with32(m.bytes, P + 8, 0) : m.bytes),
  },
  {
    name: 'reads past the end of config space',
    fails: ['regions.access-bounds'],
    rule(m) {
      if (!request(m, Command.REGION_READ)) return m.bytes;
      const a = access(m);
      return a.region === RegionIndex.CONFIG && a.offset + a.count > 4096 ? with32(m.bytes, P + 12, 4096 - a.offset) : m.bytes;
    },
  },
  {
    name: 'has header type 1',
    fails: ['config.header'],
    rule(m) {
      if (!reply(m, Command.REGION_READ) || m.isError) return m.bytes;
      const a = access(m);
      if (a.region !== RegionIndex.CONFIG || a.offset > 0x0e || a.offset + a.count <= 0x0e) return m.bytes;
      const b = Buffer.from(m.bytes);
      b[P + 16 + 0x0e - a.offset] = 1;
      return b;
    },
  },
  {
    name: 'lets the vendor id be written',
    fails: ['config.readonly-ids'],
    rule(m) {
      if (request(m, Command.REGION_WRITE) && access(m).region === RegionIndex.CONFIG && access(m).offset === 0) m.state.set('vendor', m.bytes.readUInt32LE(P + 16));
      const written = m.state.get('vendor') as number | undefined;
      if (written !== undefined && reply(m, Command.REGION_READ) && !m.isError && access(m).region === RegionIndex.CONFIG && access(m).offset === 0 && access(m).count === 4) return with32(m.bytes, P + 16, written);
      return m.bytes;
    },
  },
  {
    name: 'lets status bits be set by a write',
    fails: ['config.status-write'],
    rule(m) {
      if (request(m, Command.REGION_WRITE) && access(m).region === RegionIndex.CONFIG && access(m).offset === 6) m.state.set('status', true);
      if (!m.state.get('status') || !reply(m, Command.REGION_READ) || m.isError || access(m).region !== RegionIndex.CONFIG || access(m).offset !== 6) return m.bytes;
      const b = Buffer.from(m.bytes);
      b.writeUInt16LE(0xffff, P + 16);
      return b;
    },
  },
  {
    name: 'sizes BAR 0 wrong',
    fails: ['config.bar-sizing'],
    rule(m) {
      if (request(m, Command.REGION_WRITE) && access(m).region === RegionIndex.CONFIG && access(m).offset === 0x10) m.state.set('sizing', m.bytes.readUInt32LE(P + 16) === 0xffffffff);
      if (m.state.get('sizing') && reply(m, Command.REGION_READ) && !m.isError && access(m).region === RegionIndex.CONFIG && access(m).offset === 0x10) return with32(m.bytes, P + 16, 0xffffe000);
      return m.bytes;
    },
  },
  {
    name: 'has a capability chain that loops',
    fails: ['config.capability-chain'],
    rule(m) {
      if (!reply(m, Command.REGION_READ) || m.isError) return m.bytes;
      const a = access(m);
      if (a.region !== RegionIndex.CONFIG || a.offset > 0x41 || a.offset + a.count <= 0x41) return m.bytes;
      const b = Buffer.from(m.bytes);
      b[P + 16 + 0x41 - a.offset] = 0x40; // the first capability points to itself
      return b;
    },
  },
  {
    name: 'reports 7 MSI-X vectors in IRQ info',
    fails: ['config.msix'],
    rule: (m) => (reply(m, Command.DEVICE_GET_IRQ_INFO) && !m.isError && m.bytes.readUInt32LE(P + 8) === IrqIndex.MSIX ? with32(m.bytes, P + 12, 7) : m.bytes),
  },
  { name: 'refuses DMA_MAP', fails: ['dma.map-fd', 'dma.map-no-fd'], rule: (m) => (reply(m, Command.DMA_MAP) ? failure(m, Errno.EINVAL) : m.bytes) },
  acceptsWhatIsRefused('unmaps what was never mapped', 'dma.unmap-unknown', Command.DMA_UNMAP),
  acceptsWhatIsRefused('maps overlapping ranges', 'dma.map-overlap', Command.DMA_MAP),
  { name: 'refuses overlapping maps with EINVAL, not EEXIST', fails: ['dma.map-overlap'], rule: (m) => (reply(m, Command.DMA_MAP) && m.isError && m.bytes.readUInt32LE(12) === Errno.EEXIST ? failure(m, Errno.EINVAL) : m.bytes) },
  mapsWhatIsRefused('maps zero bytes', 'dma.map-zero-size', (r) => r.size === 0n),
  mapsWhatIsRefused('maps ranges off a page boundary', 'dma.map-unaligned', (r) => (r.address | r.size | r.offset) % 4096n !== 0n),
  mapsWhatIsRefused('maps ranges that wrap past 2^64', 'dma.map-wrap', (r) => r.address + r.size > 1n << 64n),
  {
    name: 'answers a refused DMA_MAP under another msg_id',
    fails: ['dma.map-zero-size'],
    rule: (m) => (reply(m, Command.DMA_MAP) && m.isError ? (() => { const b = Buffer.from(m.bytes); b.writeUInt16LE((b.readUInt16LE(0) + 100) & 0xffff, 0); return b; })() : m.bytes),
  },
  {
    name: 'advertises migration in VERSION but refuses it',
    fails: ['migration.version-agrees'],
    rule: (m) => (reply(m, Command.DEVICE_FEATURE) && (m.request!.readUInt32LE(P + 4) & 0xffff) === FeatureId.MIGRATION ? failure(m, Errno.ENOTSUP) : m.bytes),
  },
  {
    name: 'offers migration but leaves it out of VERSION',
    fails: ['migration.version-agrees'],
    rule: (m) => (reply(m, Command.VERSION) && !m.isError ? editVersion(m, (caps) => delete caps.migration) : m.bytes),
  },
  {
    name: 'names the wrong IRQ index',
    fails: ['irq.info'],
    rule: (m) => (reply(m, Command.DEVICE_GET_IRQ_INFO) && !m.isError && m.bytes.readUInt32LE(P + 8) === IrqIndex.INTX ? with32(m.bytes, P + 8, 4) : m.bytes),
  },
  acceptsWhatIsRefused('answers IRQ info for any index', 'irq.info-bad-index', Command.DEVICE_GET_IRQ_INFO),
  { name: 'refuses eventfds', fails: ['irq.set-eventfd'], rule: (m) => (reply(m, Command.DEVICE_SET_IRQS) && m.request!.readUInt32LE(P + 4) & 4 ? failure(m, Errno.EINVAL) : m.bytes) },
  {
    name: 'sets IRQs out of range',
    fails: ['irq.set-out-of-range'],
    rule: (m) => (reply(m, Command.DEVICE_SET_IRQS) && m.isError && m.request!.readUInt32LE(P + 8) === IrqIndex.INTX ? success(m) : m.bytes),
  },
  { name: 'fails DEVICE_RESET', fails: ['reset'], rule: (m) => (reply(m, Command.DEVICE_RESET) ? failure(m, Errno.EIO) : m.bytes) },
  {
    name: 'offers migration without STOP_COPY',
    fails: ['migration.feature'],
    rule: (m) => (reply(m, Command.DEVICE_FEATURE) && !m.isError && (m.bytes.readUInt32LE(P + 4) & 0xffff) === FeatureId.MIGRATION && m.bytes.length >= P + 16 ? with32(m.bytes, P + 8, 0) : m.bytes),
  },
  {
    name: 'starts in state STOP',
    fails: ['migration.states'],
    rule(m) {
      if (!reply(m, Command.DEVICE_FEATURE) || m.isError || (m.bytes.readUInt32LE(P + 4) & 0xffff) !== FeatureId.MIG_DEVICE_STATE || m.bytes.length < P + 12) return m.bytes;
      if (m.state.get('mig-first') !== undefined) return m.bytes;
      m.state.set('mig-first', true);
      return with32(m.bytes, P + 8, MigrationState.STOP);
    },
  },
  { name: 'ignores unknown commands', fails: ['hostile.unknown-command'], rule: (m) => (reply(m, 99) ? null : m.bytes) },
  {
    name: 'dies on a short REGION_READ',
    fails: ['hostile.short-payload', 'hostile.still-serving'],
    rule: (m) => (request(m, Command.REGION_READ) && m.bytes.length < P + 16 ? 'die' : m.bytes),
  },
  {
    name: 'answers a bad region twice',
    fails: ['hostile.bad-region'],
    rule: (m) => (reply(m, Command.REGION_READ) && m.isError && access(m).region === 200 ? Buffer.concat([m.bytes, m.bytes]) : m.bytes),
  },
  {
    name: 'answers a bad region with EIO',
    fails: ['hostile.bad-region'],
    rule: (m) => (reply(m, Command.REGION_READ) && m.isError && access(m).region === 200 ? failure(m, Errno.EIO) : m.bytes),
  },
  acceptsWhatIsRefused('takes writes whose data is short', 'hostile.count-mismatch', Command.REGION_WRITE),
  {
    name: 'drops the connection on a 2 GiB read',
    fails: ['hostile.huge-count'],
    rule: (m) => (request(m, Command.REGION_READ) && m.bytes.length >= P + 16 && access(m).count === 0x7fffffff ? 'die' : m.bytes),
  },
  acceptsWhatIsRefused('sets IRQs of any index', 'hostile.bad-irq-index', Command.DEVICE_SET_IRQS),
  acceptsWhatIsRefused('takes DMA_READ from the client', 'hostile.client-sends-dma-read', Command.DMA_READ),
  { name: 'chokes on stray fds', fails: ['hostile.unwanted-fds'], rule: (m) => (request(m, Command.DEVICE_GET_INFO) && m.fds.length > 0 ? 'die' : m.bytes) },
  { name: 'dies on an untrusted header', fails: ['hostile.header-too-small', 'hostile.header-too-large'], rule: (m) => m.bytes, onUntrustedHeader: 'die' },
];

/** No rule broken: the interposer must be invisible. */
export const TRANSPARENT: BrokenServer = { name: 'transparent', fails: [], rule: (m) => m.bytes };

/** A running broken server. */
export interface RunningBroken {
  path: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  stop(): void;
}

/** Options for {@link startBroken}. */
export interface BrokenOptions {
  /**
   * Serve one client in its whole life, as libvfio-user's samples do: listen
   * with a backlog of 0, accept the first connection and no other (later
   * ones queue, then find the backlog full), and stop listening (socket
   * removed) once that client has left.
   */
  oneClient?: boolean;
}

/** Serves the counter sample behind `broken`'s interposer; `path` is where clients connect. */
export function startBroken(broken: BrokenServer, options: BrokenOptions = {}): RunningBroken {
  const dir = mkdtempSync(join(tmpdir(), 'muser-broken-'));
  const devicePath = join(dir, 'device.sock');
  const path = join(dir, 'broken.sock');
  const server: Server = serve(counterDevice(), devicePath, { log: 'silent' });
  const links = new Set<Channel>();
  let dead = false;
  let accepted = 0;
  const die = (): void => {
    if (dead) return;
    dead = true;
    front.close();
    for (const ch of [...links]) ch.close();
    server.close();
  };
  const link = (clientFd: number): void => {
    accepted++;
    const state = new Map<string, unknown>();
    const requests = new Map<string, Buffer>();
    const device = connectNow(devicePath);
    let clientCh!: Channel;
    let deviceCh!: Channel;
    const pass = (dir: Message['dir'], bytes: Buffer, fds: number[]): void => {
      const command = bytes.readUInt16LE(2);
      const flags = bytes.readUInt32LE(8);
      const isReply = (flags & 0xf) === HeaderFlag.REPLY;
      const key = `${dir === 'c>s' ? (isReply ? 's' : 'c') : isReply ? 'c' : 's'}:${bytes.readUInt16LE(0)}`;
      if (!isReply) requests.set(key, Buffer.from(bytes));
      const m: Message = { dir, bytes, fds, command, isReply, isError: (flags & HeaderFlag.ERROR) !== 0, request: isReply ? requests.get(key) : undefined, state };
      if (isReply) requests.delete(key);
      const verdict = broken.rule(m);
      if (verdict === 'die') {
        closeAll(fds);
        die();
        return;
      }
      if (verdict !== null) (dir === 'c>s' ? deviceCh : clientCh).send(verdict, fds.length > 0 ? fds : undefined);
      closeAll(fds);
    };
    const end = (error?: Error): void => {
      links.delete(clientCh);
      links.delete(deviceCh);
      clientCh.close();
      deviceCh.close();
      if ((error && broken.onUntrustedHeader === 'die') || options.oneClient) die();
    };
    clientCh = new Channel(clientFd, { onFrame: (f) => pass('c>s', f.bytes, f.fds), onClose: end });
    deviceCh = new Channel(device, { onFrame: (f) => pass('s>c', f.bytes, f.fds), onClose: () => end() });
    links.add(clientCh);
    links.add(deviceCh);
  };
  const front = options.oneClient ? oneClientListener(path, link) : new Listener(path, link);
  return {
    path,
    get accepted() {
      return accepted;
    },
    stop() {
      die();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Listens with a backlog of 0 and accepts one connection only; close() stops listening and removes the socket. */
function oneClientListener(path: string, onClient: (fd: number) => void): { close(): void } {
  const fd = native.listen(path, 0, 0o600);
  let taken = false;
  let polling = true;
  let closed = false;
  const stopPolling = (): void => {
    if (!polling) return;
    polling = false;
    native.pollStop(poll);
  };
  const poll = native.pollStart(fd, PollMode.Readable, (kind) => {
    if (kind !== PollEvent.Readable || taken) return;
    const client = native.accept(fd);
    if (client < 0) return;
    taken = true;
    // Stop watching, outside this callback: later connections stay queued, never accepted.
    setImmediate(stopPolling);
    onClient(client);
  });
  return {
    close() {
      if (closed) return;
      closed = true;
      stopPolling();
      native.close(fd);
      rmSync(path, { force: true });
    },
  };
}
