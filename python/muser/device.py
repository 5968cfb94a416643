"""A PCI device whose behaviour is Python, served by muser."""
from __future__ import annotations

import json
from typing import Callable, Mapping, Optional, Sequence

from .dma import Dma
from .errors import DeviceError
from .registers import Bar, Identity, Interrupts, Register
from .wire import VERSION, value_to_json

LEVELS = {'debug': 0, 'info': 1, 'warn': 2, 'warning': 2, 'error': 3}


class Device:
    """A device: its description, and what it may do while served.

    ``state`` is a dict of plain data (what ``json`` can hold). Keep what
    must survive a live migration there: muser migrates it with the device.
    Without ``state`` (None), the device is not offered for migration,
    since muser cannot see what the program keeps elsewhere.

    Callbacks run one at a time, on the thread that called :meth:`serve`.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        name: Optional[str] = None,
        bars: Optional[Mapping[int, Bar]] = None,
        config: Sequence[Register] = (),
        interrupts: Optional[Interrupts] = None,
        capabilities: Sequence[dict] = (),
        state: Optional[dict] = None,
        on_reset: Optional[Callable[[str, 'Device'], None]] = None,
        on_connect: Optional[Callable[['Device'], None]] = None,
        on_disconnect: Optional[Callable[['Device'], None]] = None,
    ):
        self.identity = identity
        self.name = name
        self.bars = dict(bars or {})
        self.config = list(config)
        self.interrupts = interrupts or Interrupts()
        self.capabilities = list(capabilities)
        self.state = state
        self.on_reset = on_reset
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        #: Register values muser last told for config registers with a write callback.
        self.config_values: dict[str, int] = {}
        self._runtime = None
        self._check()

    # ---- description ----

    def _check(self) -> None:
        if not isinstance(self.identity, Identity):
            raise TypeError('identity: must be a muser.Identity')
        names = set()
        for index, bar in self.bars.items():
            if index not in range(6):
                raise ValueError(f'bars: {index!r} is not a BAR index 0-5')
            if not isinstance(bar, Bar):
                raise TypeError(f'bars[{index}]: must be a muser.Bar')
            for i, r in enumerate(bar.registers):
                r.check(f'bars[{index}].registers[{i}]')
                names.add(r.name)
        for i, r in enumerate(self.config):
            r.check(f'config[{i}]')
            if r.read is not None:
                raise TypeError(f'config[{i}] ({r.name}).read: config registers cannot have read callbacks '
                                '(config space reads are answered at once; use set_register to change the value)')
        if self.state is not None:
            json.dumps(self.state)  # raises TypeError early for what cannot migrate

    def describe(self) -> dict:
        """HELLO's payload: the whole device, as muser receives it."""
        device = {
            'identity': self.identity.to_json(),
            'bars': [bar.to_json(index) for index, bar in sorted(self.bars.items())],
            'config': [r.to_json() for r in self.config],
            'interrupts': self.interrupts.to_json(),
            'capabilities': list(self.capabilities),
        }
        if self.name is not None:
            device['name'] = self.name
        if self.state is not None:
            device['state'] = self.state
        return {'version': VERSION, 'device': device}

    # ---- while served ----

    @property
    def dma(self) -> Dma:
        """Guest memory: ``read(address, length)`` and ``write(address, data)``."""
        return self._served().dma

    @property
    def connected(self) -> bool:
        """True while a client (a VMM) is connected."""
        return self._runtime is not None and self._runtime.connected

    def trigger(self, vector: int = 0) -> None:
        """Raises interrupt ``vector`` in whatever mode the client enabled
        (MSI-X, MSI or INTx); muser honours masks (a masked vector stays
        pending and fires when unmasked)."""
        self._served().trigger(vector)

    def log(self, message: str, level: str = 'info') -> None:
        """A line in muser's log, under the device's name."""
        if level not in LEVELS:
            raise ValueError(f'level: {level!r} is not one of debug, info, warn, error')
        self._served().log(LEVELS[level], str(message))

    def get_register(self, name: str) -> int:
        """The value muser stores for register ``name`` (one without a read callback)."""
        return self._served().get_register(name)

    def set_register(self, name: str, value: int) -> None:
        """Sets the value muser stores for register ``name``: what a read
        returns from now on (a register without a read callback)."""
        self._served().set_register(name, value)

    def call_later(self, delay: float, callback: Callable, *args):
        """Runs ``callback(*args)`` after ``delay`` seconds, on the device's
        thread; returns a handle with ``cancel()``. Timers wait while
        migration has stopped the device."""
        return self._served().call_later(delay, callback, *args)

    def call_soon_threadsafe(self, callback: Callable, *args) -> None:
        """Runs ``callback(*args)`` on the device's thread; callable from any thread."""
        self._served().call_soon_threadsafe(callback, *args)

    def add_reader(self, fd, callback: Callable[[], None]) -> None:
        """Calls ``callback()`` on the device's thread whenever ``fd`` (a file
        or anything with ``fileno()``) is readable."""
        self._served().add_reader(fd, callback)

    def remove_reader(self, fd) -> None:
        self._served().remove_reader(fd)

    def serve(self) -> None:
        """Serves the device to muser until muser closes the connection.

        The program must have been started by ``muser run`` (which hands it
        its socket as ``MUSER_DEVICE_FD``)."""
        from .runtime import Runtime

        Runtime.from_environment(self).run()

    def _served(self):
        if self._runtime is None:
            raise RuntimeError('the device is not served yet: call serve() (from a program muser runs)')
        return self._runtime


def serve(device: Device) -> None:
    """Serves ``device`` (see :meth:`Device.serve`)."""
    device.serve()


__all__ = ['Device', 'DeviceError', 'serve', 'value_to_json']
