/**
 * A scripted NBD server for the cases real servers do not produce on
 * demand: error chunks with messages, hole chunks, broken replies, servers
 * without NBD_OPT_GO. It speaks the fixed newstyle handshake; each request
 * of the transmission phase goes to `reply`, which writes whatever bytes
 * the test wants.
 */
import { createServer, type Server, type Socket } from 'node:net';

export interface FakeRequest {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
  data: Buffer;
}

export interface FakeOptions {
  size: number;
  /** Transmission flags (default HAS_FLAGS | SEND_FLUSH | SEND_TRIM | SEND_WRITE_ZEROES). */
  flags?: number;
  /** Answer NBD_OPT_STRUCTURED_REPLY with ACK (default true). */
  structured?: boolean;
  /** Answer NBD_OPT_GO with NBD_REP_ERR_UNSUP, so the client must use NBD_OPT_EXPORT_NAME. */
  noGo?: boolean;
  reply(socket: Socket, request: FakeRequest): void;
}

const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};
const u64 = (v: number | bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
};
const u16 = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};

/** A simple reply header. */
export function simpleReply(cookie: bigint, error = 0): Buffer {
  return Buffer.concat([u32(0x67446698), u32(error), u64(cookie)]);
}

/** A structured reply chunk. */
export function chunk(cookie: bigint, type: number, payload: Buffer, done: boolean): Buffer {
  return Buffer.concat([u32(0x668e33ef), u16(done ? 1 : 0), u16(type), u64(cookie), u32(payload.length), payload]);
}

export const dataChunk = (cookie: bigint, offset: number, data: Buffer, done: boolean) => chunk(cookie, 1, Buffer.concat([u64(offset), data]), done);
export const holeChunk = (cookie: bigint, offset: number, length: number, done: boolean) => chunk(cookie, 2, Buffer.concat([u64(offset), u32(length)]), done);
export const errorChunk = (cookie: bigint, error: number, message: string, done: boolean) => {
  const m = Buffer.from(message);
  return chunk(cookie, 0x8001, Buffer.concat([u32(error), u16(m.length), m]), done);
};

/** Starts the server on 127.0.0.1; resolves with it and its URI. */
export async function fakeNbdServer(o: FakeOptions): Promise<{ server: Server; uri: string }> {
  const server = createServer((socket) => serve(socket, o));
  server.unref();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { server, uri: `nbd://127.0.0.1:${port}/` };
}

function serve(socket: Socket, o: FakeOptions): void {
  let buf = Buffer.alloc(0);
  let phase: 'flags' | 'options' | 'transmission' = 'flags';
  const optReply = (option: number, type: number, data: Buffer = Buffer.alloc(0)) =>
    socket.write(Buffer.concat([u64(0x3e889045565a9n), u32(option), u32(type), u32(data.length), data]));
  const flags = o.flags ?? (1 | 4 | 32 | 64);
  socket.on('error', () => {});
  socket.write(Buffer.concat([Buffer.from('NBDMAGIC'), Buffer.from('IHAVEOPT'), u16(3)]));
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (phase === 'flags') {
        if (buf.length < 4) return;
        buf = buf.subarray(4);
        phase = 'options';
      } else if (phase === 'options') {
        if (buf.length < 16) return;
        const option = buf.readUInt32BE(8);
        const len = buf.readUInt32BE(12);
        if (buf.length < 16 + len) return;
        buf = buf.subarray(16 + len);
        if (option === 8) optReply(option, o.structured === false ? 0x80000001 : 1);
        else if (option === 7 && o.noGo) optReply(option, 0x80000001);
        else if (option === 7) {
          optReply(option, 3, Buffer.concat([u16(0), u64(o.size), u16(flags)]));
          optReply(option, 1);
          phase = 'transmission';
        } else if (option === 1) {
          socket.write(Buffer.concat([u64(o.size), u16(flags)])); // no zeroes: NO_ZEROES was offered and taken
          phase = 'transmission';
        } else optReply(option, 0x80000001);
      } else {
        if (buf.length < 28) return;
        const type = buf.readUInt16BE(6);
        const length = buf.readUInt32BE(24);
        const payload = type === 1 ? length : 0;
        if (buf.length < 28 + payload) return;
        const req: FakeRequest = { flags: buf.readUInt16BE(4), type, cookie: buf.readBigUInt64BE(8), offset: Number(buf.readBigUInt64BE(16)), length, data: buf.subarray(28, 28 + payload) };
        buf = buf.subarray(28 + payload);
        if (type === 2) return void socket.end();
        o.reply(socket, req);
      }
    }
  });
}
