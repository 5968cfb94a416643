/**
 * The fixed newstyle handshake: ask for structured replies, then select the
 * export with NBD_OPT_GO (falling back to NBD_OPT_EXPORT_NAME for servers
 * that lack it), learning its size, transmission flags and block sizes.
 */
import type { Socket } from 'node:net';
import { CursorReader, CursorWriter, type ByteQueue } from './cursor.js';
import { NbdConnectError } from './errors.js';
import {
  ClientFlag,
  DEFAULT_MAX_PAYLOAD,
  HandshakeFlag,
  Info,
  INIT_MAGIC,
  OLDSTYLE_MAGIC,
  Opt,
  OPTION_MAGIC,
  OPTION_REPLY_MAGIC,
  Rep,
  REP_ERR_SHUTDOWN,
  REP_ERR_UNSUP,
  REP_ERROR_BIT,
  RepError,
} from './protocol.js';

/** What the handshake learned about the export. */
export interface ExportInfo {
  /** Size in bytes as the server states it. */
  readonly size: number;
  /** Transmission flags (TxFlag bits). */
  readonly flags: number;
  /** Replies to reads come as structured replies. */
  readonly structuredReplies: boolean;
  /** Smallest block the server handles without read-modify-write (1 if not stated). */
  readonly minBlock: number;
  /** Largest request payload the server accepts. */
  readonly maxPayload: number;
}

/** Reads whole messages from the socket during the handshake. */
export interface HandshakeInput {
  read(n: number): Promise<Buffer>;
}

/** Waits on `queue` (fed by the socket's data events) for `n` bytes. */
export function handshakeInput(socket: Socket, queue: ByteQueue): HandshakeInput & { dispose(): void } {
  let waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  let ended: Error | undefined;
  const wake = () => {
    if (waiter && queue.length >= waiter.n) {
      const w = waiter;
      waiter = undefined;
      w.resolve(queue.take(w.n));
    } else if (waiter && ended) {
      const w = waiter;
      waiter = undefined;
      w.reject(ended);
    }
  };
  const onData = (b: Buffer) => {
    queue.push(b);
    wake();
  };
  const onEnd = (e?: Error) => {
    ended = new NbdConnectError('connect', `the server closed the connection during the handshake${e ? `: ${e.message}` : ''}`);
    wake();
  };
  const onClose = () => onEnd();
  socket.on('data', onData);
  socket.on('error', onEnd);
  socket.on('close', onClose);
  return {
    read(n) {
      return new Promise((resolve, reject) => {
        waiter = { n, resolve, reject };
        wake();
      });
    },
    dispose() {
      socket.off('data', onData);
      socket.off('error', onEnd);
      socket.off('close', onClose);
    },
  };
}

/**
 * Runs the handshake for `exportName` on a connected socket.
 *
 * @throws NbdConnectError: 'refused' (unknown export, TLS required, policy),
 * 'protocol' (not an NBD server, oldstyle only, bad replies), 'connect'
 * (the connection dropped).
 */
export async function negotiate(socket: Socket, input: HandshakeInput, exportName: string): Promise<ExportInfo> {
  const hello = new CursorReader(await input.read(16));
  if (hello.u64() !== INIT_MAGIC) throw new NbdConnectError('protocol', 'the peer is not an NBD server (no NBDMAGIC)');
  const style = hello.u64();
  if (style === OLDSTYLE_MAGIC) throw new NbdConnectError('protocol', 'the server speaks only the oldstyle handshake, which is not supported');
  if (style !== OPTION_MAGIC) throw new NbdConnectError('protocol', 'the server sent an unknown handshake');
  const serverFlags = new CursorReader(await input.read(2)).u16();
  if ((serverFlags & HandshakeFlag.FixedNewstyle) === 0) throw new NbdConnectError('protocol', 'the server does not speak the fixed newstyle handshake');
  const noZeroes = (serverFlags & HandshakeFlag.NoZeroes) !== 0;
  socket.write(new CursorWriter(4).u32(ClientFlag.FixedNewstyle | (noZeroes ? ClientFlag.NoZeroes : 0)).bytes());

  sendOption(socket, Opt.StructuredReply, Buffer.alloc(0));
  const sr = await readOptionReply(input, Opt.StructuredReply);
  if (sr.type !== Rep.Ack && (sr.type & REP_ERROR_BIT) === 0) throw new NbdConnectError('protocol', `unexpected reply ${sr.type} to NBD_OPT_STRUCTURED_REPLY`);
  if (sr.type & REP_ERROR_BIT) rejectHard(sr, exportName);
  const structuredReplies = sr.type === Rep.Ack;

  const name = Buffer.from(exportName, 'utf8');
  const go = new CursorWriter().u32(name.length).raw(name).u16(1).u16(Info.BlockSize).bytes();
  sendOption(socket, Opt.Go, go);
  let size: number | undefined;
  let flags = 0;
  let minBlock = 1;
  let maxPayload = DEFAULT_MAX_PAYLOAD;
  for (;;) {
    const r = await readOptionReply(input, Opt.Go);
    if (r.type === Rep.Ack) break;
    if (r.type === Rep.Info) {
      const data = new CursorReader(r.data);
      const info = data.u16();
      if (info === Info.Export) {
        size = toSize(data.u64());
        flags = data.u16();
      } else if (info === Info.BlockSize) {
        minBlock = data.u32();
        data.u32();
        maxPayload = Math.min(data.u32(), DEFAULT_MAX_PAYLOAD);
      }
      continue;
    }
    if (r.type === REP_ERR_UNSUP) return exportNameFallback(socket, input, name, noZeroes, structuredReplies);
    if (r.type & REP_ERROR_BIT) throw refusal(r, exportName);
    // Other reply types (NBD_REP_SERVER and future ones) carry nothing we need.
  }
  if (size === undefined) throw new NbdConnectError('protocol', 'the server finished NBD_OPT_GO without stating the export size');
  return { size, flags, structuredReplies, minBlock, maxPayload };
}

interface OptionReply {
  readonly type: number;
  readonly data: Buffer;
}

function sendOption(socket: Socket, option: number, data: Buffer): void {
  socket.write(new CursorWriter(16 + data.length).u64(OPTION_MAGIC).u32(option).u32(data.length).raw(data).bytes());
}

async function readOptionReply(input: HandshakeInput, option: number): Promise<OptionReply> {
  const h = new CursorReader(await input.read(20));
  if (h.u64() !== OPTION_REPLY_MAGIC) throw new NbdConnectError('protocol', 'bad option reply magic');
  const echoed = h.u32();
  const type = h.u32();
  const length = h.u32();
  if (echoed !== option) throw new NbdConnectError('protocol', `option reply for option ${echoed}, expected ${option}`);
  if (length > 1 << 20) throw new NbdConnectError('protocol', `option reply of ${length} bytes is too large`);
  return { type, data: length === 0 ? Buffer.alloc(0) : await input.read(length) };
}

/** Errors that end the handshake whatever option drew them. */
function rejectHard(r: OptionReply, exportName: string): void {
  if (r.type === REP_ERR_UNSUP) return;
  const tls = RepError[r.type] === 'TLS required';
  if (tls || r.type === REP_ERR_SHUTDOWN) throw refusal(r, exportName);
}

function refusal(r: OptionReply, exportName: string): NbdConnectError {
  const what = RepError[r.type] ?? `error ${r.type - REP_ERROR_BIT}`;
  const detail = r.data.length > 0 ? `: ${r.data.toString('utf8')}` : '';
  // A shutting-down server may come back; everything else is a firm no.
  const failure = r.type === REP_ERR_SHUTDOWN ? 'connect' : 'refused';
  const hint = what === 'TLS required' ? ' (this NBD client does not support TLS)' : '';
  return new NbdConnectError(failure, `the NBD server refused export '${exportName}': ${what}${hint}${detail}`);
}

/** NBD_OPT_EXPORT_NAME: the old way to pick an export; the server hangs up on an unknown name. */
async function exportNameFallback(socket: Socket, input: HandshakeInput, name: Buffer, noZeroes: boolean, structuredReplies: boolean): Promise<ExportInfo> {
  sendOption(socket, Opt.ExportName, name);
  let reply: Buffer;
  try {
    reply = await input.read(noZeroes ? 10 : 134);
  } catch {
    throw new NbdConnectError('refused', `the NBD server refused export '${name.toString('utf8')}' (it closed the connection)`);
  }
  const r = new CursorReader(reply);
  return { size: toSize(r.u64()), flags: r.u16(), structuredReplies, minBlock: 1, maxPayload: DEFAULT_MAX_PAYLOAD };
}

function toSize(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdConnectError('protocol', `export size ${v} is too large`);
  return Number(v);
}
