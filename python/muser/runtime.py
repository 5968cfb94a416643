"""The program's side of the connection to muser: HELLO, then a loop that
answers muser's requests, runs timers and readers, and carries the
device's own requests (DMA, register values) to muser.

One thread runs everything. muser's requests that run device code (register
accesses, reset, migration) wait in a queue and run one at a time; what
only concerns the connection (mappings, DMA_ALLOWED, SYNC) is handled at
once, even while a callback waits for muser's answer to a DMA request.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
import selectors
import socket
import sys
import time
import traceback
from collections import deque

from .dma import Dma
from .errors import DeviceError, DmaError, SpecError
from .wire import (ACCESS, DIRTY_PAIR, DMA_READ, ERROR, EVENT, MAX_DATA, REPLY, U32, U64, WRITE_ACCESS, Kind,
                   Message, ProtocolError, Reader, encode, value_from_json, value_to_json)

EIO = 5
EINVAL = 22

#: Requests and events that run device code: queued, run in order.
QUEUED = {Kind.READ, Kind.WRITE, Kind.CONFIG_WRITE, Kind.RESET, Kind.CONNECT, Kind.DISCONNECT,
          Kind.QUIESCE, Kind.RESUME, Kind.LOAD_STATE}


class Timer:
    """A pending :meth:`Device.call_later`."""

    __slots__ = ('when', 'callback', 'args', 'cancelled')

    def __init__(self, when, callback, args):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Runtime:
    def __init__(self, device, sock: socket.socket):
        self.device = device
        self.sock = sock
        sock.setblocking(True)
        self.reader = Reader(sock)
        self.inbox: deque[Message] = deque()
        self.queue: deque[Message] = deque()
        self.next_id = 0
        self.connected = False
        self.max_data = MAX_DATA
        self.dma = Dma(self._dma_by_message, MAX_DATA)
        self.timers: list = []
        self.timer_seq = itertools.count()
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._drain_wakeups)
        self.soon: deque = deque()
        self.places = {}
        for index, bar in device.bars.items():
            for r in bar.registers:
                self.places[(index, r.offset)] = r
        self.config_by_name = {r.name: r for r in device.config}
        self.names = {r.name: r for bar in device.bars.values() for r in bar.registers}
        self.names.update(self.config_by_name)

    @classmethod
    def from_environment(cls, device) -> 'Runtime':
        fd = os.environ.get('MUSER_DEVICE_FD')
        if fd is None:
            name = os.path.basename(sys.argv[0]) or 'this program'
            sys.stderr.write(f'{name} is a muser device program: serve it with\n    muser run {sys.argv[0]} <socket>\n')
            raise SystemExit(2)
        return cls(device, socket.socket(fileno=int(fd)))

    # ---- the loop ----

    def run(self) -> None:
        self.device._runtime = self
        try:
            self._hello()
            while True:
                self._flush_dirty()
                if self.inbox:
                    self._take(self.inbox.popleft())
                    continue
                if self.queue:
                    self._run(self.queue.popleft())
                    continue
                if self._run_due():
                    continue
                for key, _ in self.selector.select(self._timeout()):
                    if key.data is None:
                        self.inbox.extend(self.reader.read())
                    else:
                        self._call(key.data)
        except (EOFError, ConnectionResetError, BrokenPipeError):
            pass  # muser is gone: so is the device
        except KeyboardInterrupt:
            pass  # Ctrl-C reached muser too, which stops serving
        finally:
            self.dma.unmap_all()
            self.reader.close()
            self.selector.close()
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.device._runtime = None

    def _hello(self) -> None:
        reply = self.request(Kind.HELLO, json.dumps(self.device.describe()).encode(), spec=True)
        answer = json.loads(reply)
        self.max_data = int(answer.get('maxData', MAX_DATA))
        self.dma._max_data = self.max_data

    def _timeout(self):
        if self.soon:
            return 0
        live = [t for t in self.timers if not t[2].cancelled]
        if not live or self.dma.quiesced:
            return None
        return max(0.0, min(t[0] for t in live) - time.monotonic())

    def _run_due(self) -> bool:
        if self.soon:
            callback, args = self.soon.popleft()
            self._call(callback, *args)
            return True
        if self.dma.quiesced:
            return False
        now = time.monotonic()
        while self.timers and (self.timers[0][2].cancelled or self.timers[0][0] <= now):
            _, _, timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                self._call(timer.callback, *timer.args)
                return True
        return False

    def _call(self, callback, *args) -> None:
        """Device code outside an access: an exception is printed, the device goes on."""
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - a device bug must not end the device
            traceback.print_exc()

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # ---- messages from muser ----

    def _take(self, m: Message) -> None:
        """A message that is not the reply being waited for."""
        if m.is_reply:
            raise ProtocolError(f'a reply nobody waits for: {m!r}')
        if m.kind in QUEUED:
            self.queue.append(m)
        elif m.kind == Kind.MAP:
            j = json.loads(m.payload)
            self.dma.map(j['iova'], j['size'], j['offset'], j['prot'], m.fd)
        elif m.kind == Kind.UNMAP:
            j = json.loads(m.payload)
            self.dma.unmap(j['iova'], j['size'])
            self._reply(m)
        elif m.kind == Kind.DMA_ALLOWED:
            (self.dma.allowed,) = (bool(v) for v in U32.unpack(m.payload))
        elif m.kind == Kind.SYNC:
            self._reply(m)  # _send flushes DIRTY first
        else:
            raise ProtocolError(f'unknown message kind {m.kind}')

    def _run(self, m: Message) -> None:
        """A queued request or event: runs device code."""
        try:
            payload = self._serve(m)
        except Exception as e:  # noqa: BLE001 - becomes the access's error reply
            if m.is_event:
                traceback.print_exc()
                return
            errno = getattr(e, 'errno', None)
            if not isinstance(e, DeviceError):
                traceback.print_exc()
            if not isinstance(errno, int) or not 0 < errno < 4096:
                errno = EIO
            self._send(m.kind, str(e).encode(), id=m.id, flags=REPLY | ERROR, errno=errno)
            return
        if not m.is_event:
            self._reply(m, payload)

    def _serve(self, m: Message) -> bytes:
        device = self.device
        kind = m.kind
        if kind == Kind.READ:
            bar, width, offset = ACCESS.unpack(m.payload)
            r = self._register(bar, offset, 'read')
            value = r.read(device)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << (8 * width):
                raise TypeError(f'register {r.name}: read returned {value!r}, not an integer of {width} bytes')
            return U64.pack(value)
        if kind == Kind.WRITE:
            bar, width, offset, value = WRITE_ACCESS.unpack(m.payload)
            self._register(bar, offset, 'write').write(value, device)
            return b''
        if kind == Kind.CONFIG_WRITE:
            j = json.loads(m.payload)
            r = self.config_by_name[j['name']]
            value = value_from_json(j['value'])
            device.config_values[r.name] = value
            if r.write is not None:
                r.write(value, device)
            return b''
        if kind == Kind.RESET:
            reason = json.loads(m.payload).get('reason', 'client')
            self.dma.quiesced = False  # a reset returns migration to running
            device.config_values.clear()
            if device.on_reset is not None:
                device.on_reset(reason, device)
            return b''
        if kind == Kind.CONNECT:
            self.connected = True
            if device.on_connect is not None:
                device.on_connect(device)
            return b''
        if kind == Kind.DISCONNECT:
            self.connected = False
            self.dma.unmap_all()
            self.dma.allowed = False
            if device.on_disconnect is not None:
                device.on_disconnect(device)
            return b''
        if kind == Kind.QUIESCE:
            self.dma.quiesced = True
            return json.dumps(device.state).encode()
        if kind == Kind.RESUME:
            self.dma.quiesced = False
            return b''
        if kind == Kind.LOAD_STATE:
            state = json.loads(m.payload)
            if device.state is None or not isinstance(state, dict):
                raise DeviceError(EINVAL, 'migrated state does not fit this device')
            device.state.clear()
            device.state.update(state)
            return b''
        raise ProtocolError(f'unknown message kind {kind}')

    def _register(self, bar: int, offset: int, what: str):
        r = self.places.get((bar, offset))
        if r is None or getattr(r, what) is None:
            raise ProtocolError(f'muser asked to {what} BAR {bar} +{offset:#x}, which has no {what} callback')
        return r

    # ---- messages to muser ----

    def _send(self, kind: int, payload: bytes = b'', *, id: int = 0, flags: int = 0, errno: int = 0) -> None:
        self._flush_dirty()
        self.sock.sendall(encode(kind, payload, id=id, flags=flags, errno=errno))

    def _reply(self, m: Message, payload: bytes = b'') -> None:
        self._send(m.kind, payload, id=m.id, flags=REPLY)

    def _flush_dirty(self) -> None:
        dirty = self.dma.dirty
        if dirty:
            self.dma.dirty = []
            payload = b''.join(DIRTY_PAIR.pack(a, n) for a, n in dirty)
            self.sock.sendall(encode(Kind.DIRTY, payload, flags=EVENT))

    def request(self, kind: int, payload: bytes, spec: bool = False) -> bytes:
        """Sends a request and waits for its reply; other messages are handled meanwhile."""
        self.next_id = (self.next_id + 1) & 0xFFFF
        id = self.next_id
        self._send(kind, payload, id=id)
        while True:
            while not self.inbox:
                self.inbox.extend(self.reader.read())
            m = self.inbox.popleft()
            if m.is_reply and m.id == id and m.kind == kind:
                if m.is_error:
                    text = m.payload.decode('utf-8', 'replace')
                    if spec:
                        raise SpecError(f'muser refused the device: {text}')
                    raise (DmaError if kind in (Kind.DMA_READ, Kind.DMA_WRITE) else DeviceError)(m.errno, text)
                return m.payload
            self._take(m)

    def _dma_by_message(self, op: str, address: int, data) -> bytes:
        if op == 'read':
            return self.request(Kind.DMA_READ, DMA_READ.pack(address, data))
        return self.request(Kind.DMA_WRITE, U64.pack(address) + bytes(data))

    def trigger(self, vector: int) -> None:
        self._send(Kind.TRIGGER, U32.pack(vector), flags=EVENT)

    def log(self, level: int, text: str) -> None:
        self._send(Kind.LOG, U32.pack(level) + text.encode('utf-8', 'replace'), flags=EVENT)

    def get_register(self, name: str) -> int:
        self._stored(name)
        return value_from_json(json.loads(self.request(Kind.GET_REGISTER, json.dumps({'name': name}).encode()))['value'])

    def set_register(self, name: str, value: int) -> None:
        r = self._stored(name)
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * r.width):
            raise ValueError(f'register {name}: {value!r} does not fit in {r.width} bytes')
        self._send(Kind.SET_REGISTER, json.dumps({'name': name, 'value': value_to_json(value)}).encode(), flags=EVENT)

    def _stored(self, name: str):
        r = self.names.get(name)
        if r is None:
            raise KeyError(f'no register is named {name!r}')
        if r.read is not None:
            raise ValueError(f'register {name} has a read callback: its value is what the callback returns')
        return r

    def call_later(self, delay: float, callback, *args) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback, args)
        heapq.heappush(self.timers, (timer.when, next(self.timer_seq), timer))
        return timer

    def call_soon_threadsafe(self, callback, *args) -> None:
        self.soon.append((callback, args))
        try:
            os.write(self.wake_w, b'x')
        except BlockingIOError:
            pass  # a wake-up is pending already

    def add_reader(self, fd, callback) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def remove_reader(self, fd) -> None:
        self.selector.unregister(fd)


__all__ = ['Runtime', 'Timer']
