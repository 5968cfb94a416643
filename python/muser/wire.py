"""The wire protocol between muser and a device program, version 1.

Every message is vfio-user's 16-byte header (id, kind, size, flags, errno;
little-endian) and a payload. See docs/device-programs.md in the muser
repository for the whole protocol; this module only encodes and decodes.
"""
from __future__ import annotations

import array
import socket
import struct
from enum import IntEnum

VERSION = 1
HEADER = struct.Struct('<HHIII')
HEADER_SIZE = HEADER.size
#: Largest payload of a DMA_READ / DMA_WRITE, until HELLO's reply says otherwise.
MAX_DATA = 1024 * 1024
#: Largest message either side may send, header included (a HELLO or a state may be large).
MAX_MESSAGE = 16 * 1024 * 1024 + HEADER_SIZE

#: flags: bits 0-3 the type (0 request, 1 reply), bit 4 event, bit 5 error reply.
REPLY = 0x1
EVENT = 0x10
ERROR = 0x20


class Kind(IntEnum):
    # program -> muser
    HELLO = 1
    LOG = 2
    TRIGGER = 3
    DMA_READ = 4
    DMA_WRITE = 5
    DIRTY = 6
    SET_REGISTER = 7
    GET_REGISTER = 8
    # muser -> program
    READ = 32
    WRITE = 33
    CONFIG_WRITE = 34
    RESET = 35
    CONNECT = 36
    DISCONNECT = 37
    MAP = 38
    UNMAP = 39
    DMA_ALLOWED = 40
    SYNC = 41
    QUIESCE = 42
    RESUME = 43
    LOAD_STATE = 44


ACCESS = struct.Struct('<BBxxI')  # READ: BAR, width, register offset
WRITE_ACCESS = struct.Struct('<BBxxIQ')  # WRITE: ... and the value
U32 = struct.Struct('<I')
U64 = struct.Struct('<Q')
DMA_READ = struct.Struct('<QQ')
DIRTY_PAIR = struct.Struct('<QQ')

MAX_SAFE_INTEGER = 2**53 - 1


class ProtocolError(Exception):
    """muser sent something this program does not understand."""


class Message:
    """One received message."""

    __slots__ = ('id', 'kind', 'flags', 'errno', 'payload', 'fd')

    def __init__(self, id: int, kind: int, flags: int, errno: int, payload: bytes, fd: int | None = None):
        self.id = id
        self.kind = kind
        self.flags = flags
        self.errno = errno
        self.payload = payload
        self.fd = fd

    @property
    def is_reply(self) -> bool:
        return self.flags & 0xF == REPLY

    @property
    def is_error(self) -> bool:
        return bool(self.flags & ERROR)

    @property
    def is_event(self) -> bool:
        return bool(self.flags & EVENT)

    def __repr__(self) -> str:
        return f'Message(id={self.id}, kind={self.kind}, flags={self.flags:#x}, errno={self.errno}, {len(self.payload)} bytes)'


def encode(kind: int, payload: bytes = b'', *, id: int = 0, flags: int = 0, errno: int = 0) -> bytes:
    """A whole message: header and payload."""
    return HEADER.pack(id, kind, HEADER_SIZE + len(payload), flags, errno) + payload


def value_to_json(v: int) -> int | str:
    """A register value for JSON: a number up to 2**53 - 1, a "0x..." string above."""
    return v if v <= MAX_SAFE_INTEGER else hex(v)


def value_from_json(v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ProtocolError(f'register value {v!r} is neither a number nor a "0x..." string')
    return int(v, 16) if isinstance(v, str) else v


class Reader:
    """Splits the stream from muser into messages. Only MAP carries a file
    descriptor (one): received fds wait in order and each MAP takes the next."""

    def __init__(self, sock: socket.socket, max_fds: int = 16):
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []
        self.ancillary = socket.CMSG_SPACE(max_fds * array.array('i').itemsize)

    def read(self) -> list[Message]:
        """One receive; the messages it completed. Raises EOFError when muser closed the socket."""
        data, ancdata, _flags, _addr = self.sock.recvmsg(256 * 1024, self.ancillary)
        for level, type_, cdata in ancdata:
            if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
                fds = array.array('i')
                fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                self.fds.extend(fds)
        if not data:
            raise EOFError('muser closed the socket')
        self.buffer += data
        out = []
        while len(self.buffer) >= HEADER_SIZE:
            id, kind, size, flags, errno = HEADER.unpack_from(self.buffer)
            if size < HEADER_SIZE or size > MAX_MESSAGE:
                raise ProtocolError(f'message size {size} out of range')
            if len(self.buffer) < size:
                break
            payload = bytes(self.buffer[HEADER_SIZE:size])
            del self.buffer[:size]
            fd = None
            if kind == Kind.MAP:
                if not self.fds:
                    raise ProtocolError('MAP without a file descriptor')
                fd = self.fds.pop(0)
            out.append(Message(id, kind, flags, errno, payload, fd))
        return out

    def close(self) -> None:
        import os

        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
