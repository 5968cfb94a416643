/**
 * NBD wire constants (values from the NBD protocol document). Every number
 * on the wire is big-endian.
 */

/** "NBDMAGIC": the first eight bytes a server sends. */
export const INIT_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": after INIT_MAGIC for newstyle servers, and before each option the client sends. */
export const OPTION_MAGIC = 0x49484156454f5054n;
/** After INIT_MAGIC for oldstyle servers, which we do not speak. */
export const OLDSTYLE_MAGIC = 0x00420281861253n;
/** Starts every option reply. */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

/** Handshake flags (server, 16 bits). */
export const HandshakeFlag = { FixedNewstyle: 1 << 0, NoZeroes: 1 << 1 } as const;
/** Client flags (32 bits), echoing the handshake flags it accepts. */
export const ClientFlag = { FixedNewstyle: 1 << 0, NoZeroes: 1 << 1 } as const;

/** Option codes. */
export const Opt = { ExportName: 1, Abort: 2, List: 3, StartTls: 5, Info: 6, Go: 7, StructuredReply: 8 } as const;

/** Option reply types; bit 31 marks an error. */
export const Rep = { Ack: 1, Server: 2, Info: 3 } as const;
export const REP_ERROR_BIT = 0x80000000;
export const RepError: Record<number, string> = {
  [0x80000001]: 'unsupported option',
  [0x80000002]: 'refused by server policy',
  [0x80000003]: 'invalid option',
  [0x80000004]: 'not supported on this platform',
  [0x80000005]: 'TLS required',
  [0x80000006]: 'unknown export',
  [0x80000007]: 'server shutting down',
  [0x80000008]: 'block size negotiation required',
  [0x80000009]: 'request too big',
  [0x8000000a]: 'extended headers required',
};
export const REP_ERR_UNSUP = 0x80000001;
export const REP_ERR_SHUTDOWN = 0x80000007;

/** NBD_INFO_* types asked for with NBD_OPT_GO. */
export const Info = { Export: 0, Name: 1, Description: 2, BlockSize: 3 } as const;

/** Transmission flags (16 bits), sent with the export's size. */
export const TxFlag = {
  HasFlags: 1 << 0,
  ReadOnly: 1 << 1,
  SendFlush: 1 << 2,
  SendFua: 1 << 3,
  Rotational: 1 << 4,
  SendTrim: 1 << 5,
  SendWriteZeroes: 1 << 6,
  SendDf: 1 << 7,
  CanMultiConn: 1 << 8,
} as const;

/** Request magic and command codes. */
export const REQUEST_MAGIC = 0x25609513;
export const Cmd = { Read: 0, Write: 1, Disconnect: 2, Flush: 3, Trim: 4, WriteZeroes: 6 } as const;
/** Command flags (16 bits). */
export const CmdFlag = { Fua: 1 << 0, NoHole: 1 << 1 } as const;

/** Reply magics. */
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Structured reply flag: the last chunk of its request. */
export const REPLY_FLAG_DONE = 1 << 0;
/** Structured reply chunk types. */
export const Chunk = { None: 0, OffsetData: 1, OffsetHole: 2, BlockStatus: 5, Error: 0x8001, ErrorOffset: 0x8002 } as const;
/** Chunk types with bit 15 set are errors. */
export const CHUNK_ERROR_BIT = 0x8000;

/** Request header: magic, flags, type, cookie, offset, length. */
export const REQUEST_HEADER_SIZE = 28;
/** Simple reply: magic, error, cookie. */
export const SIMPLE_REPLY_SIZE = 16;
/** Structured reply chunk header: magic, flags, type, cookie, length. */
export const STRUCTURED_HEADER_SIZE = 20;

/** The payload limit a client keeps to when the server names none. */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
/** The standard TCP port. */
export const DEFAULT_PORT = 10809;

/** NBD error values (errno numbers fixed by the protocol, not the host's). */
export const NbdErrno = { EPERM: 1, EIO: 5, ENOMEM: 12, EINVAL: 22, ENOSPC: 28, EOVERFLOW: 75, ENOTSUP: 95, ESHUTDOWN: 108 } as const;
