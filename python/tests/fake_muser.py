"""muser's side of the protocol, scripted: for the package's own tests."""
from __future__ import annotations

import array
import json
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muser.runtime import Runtime  # noqa: E402
from muser.wire import ERROR, EVENT, HEADER, HEADER_SIZE, REPLY, Kind, Message, Reader, encode  # noqa: E402


class FakeMuser:
    """Runs ``device`` on a thread, connected to this object by a socket pair."""

    def __init__(self, device, accept_hello: bool = True):
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(5)
        self.reader = Reader(self.sock)
        self.inbox: list[Message] = []
        self.next_id = 100
        self.error: BaseException | None = None
        self.runtime = Runtime(device, theirs)

        def run():
            try:
                self.runtime.run()
            except BaseException as e:  # noqa: BLE001 - reported to the test
                self.error = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self.hello = self.receive()
        assert self.hello.kind == Kind.HELLO, self.hello
        self.description = json.loads(self.hello.payload)
        if accept_hello:
            self.reply(self.hello, json.dumps({'version': 1, 'maxData': 4096}).encode())

    def receive(self) -> Message:
        while not self.inbox:
            self.inbox.extend(self.reader.read())
        return self.inbox.pop(0)

    def send(self, kind, payload=b'', *, id=0, flags=0, errno=0, fds=()):
        data = encode(kind, payload, id=id, flags=flags, errno=errno)
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))])
        else:
            self.sock.sendall(data)

    def event(self, kind, payload=b'', fds=()):
        self.send(kind, payload, flags=EVENT, fds=fds)

    def request(self, kind, payload=b'', fds=()) -> int:
        self.next_id += 1
        self.send(kind, payload, id=self.next_id, fds=fds)
        return self.next_id

    def reply(self, m: Message, payload=b''):
        self.send(m.kind, payload, id=m.id, flags=REPLY)

    def reply_error(self, m: Message, errno: int, text: str):
        self.send(m.kind, text.encode(), id=m.id, flags=REPLY | ERROR, errno=errno)

    def expect_reply(self, id: int, kind) -> Message:
        m = self.receive()
        assert m.is_reply and m.id == id and m.kind == kind, f'expected the reply to {kind!r} #{id}, got {m!r}'
        return m

    def close(self):
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), 'the device program did not end when muser closed its socket'


def memfd(size: int) -> int:
    fd = os.memfd_create('fake-guest-ram', os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    return fd


__all__ = ['FakeMuser', 'memfd', 'HEADER', 'HEADER_SIZE']
