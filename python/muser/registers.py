"""How a device is described: identity, BARs with register tables,
config registers, interrupts. The same words as muser's TypeScript API
(`defineRegisters`, `DeviceSpec`), in Python spelling."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .wire import value_to_json

if TYPE_CHECKING:
    from .device import Device

ACCESS_TYPES = ('ro', 'rw', 'wo', 'rw1c', 'rc')
WIDTHS = (1, 2, 4, 8)


@dataclass
class Identity:
    """PCI ids: vendor, device, subsystem ids, 24-bit class code, revision."""

    vendor_id: int
    device_id: int
    subsystem_vendor_id: int = 0
    subsystem_id: int = 0
    class_code: int = 0
    revision: int = 0

    def to_json(self) -> dict:
        return {
            'vendorId': self.vendor_id,
            'deviceId': self.device_id,
            'subsystemVendorId': self.subsystem_vendor_id,
            'subsystemId': self.subsystem_id,
            'classCode': self.class_code,
            'revision': self.revision,
        }


@dataclass
class Register:
    """One line of a register table.

    Without callbacks muser serves the register itself, with no round trip
    to Python: reads return the stored value, writes store it (the bits in
    ``writable``), with the semantics of ``access``:

    - ``ro``: read only, writes are ignored; ``rw``: read and write;
      ``wo``: write only (reads return 0); ``rw1c``: write 1 to clear;
      ``rc``: cleared (back to ``reset``) by a read.

    ``read(device) -> int`` computes the value a read returns.
    ``write(value, device)`` runs after a write was stored; ``value`` is the
    merged value written (for ``rw1c``: the bits to clear). muser checks
    each access (width, alignment, ``widths``) before calling them, and an
    exception they raise fails the guest's access (EIO, or the errno of a
    :class:`muser.DeviceError`).
    """

    name: str
    offset: int
    width: int
    access: str = 'rw'
    reset: int = 0
    writable: Optional[int] = None
    widths: Optional[Sequence[int]] = None
    read: Optional[Callable[['Device'], int]] = None
    write: Optional[Callable[[int, 'Device'], None]] = None
    trace: bool = True
    description: str = ''

    def check(self, where: str) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f'{where}.name: a register needs a name')
        where = f'{where} ({self.name})'
        if self.width not in WIDTHS:
            raise ValueError(f'{where}.width: {self.width!r} is not 1, 2, 4 or 8')
        if not isinstance(self.offset, int) or self.offset < 0 or self.offset % self.width:
            raise ValueError(f'{where}.offset: {self.offset!r} is not a byte offset aligned to the width')
        if self.access not in ACCESS_TYPES:
            raise ValueError(f'{where}.access: {self.access!r} is not one of {", ".join(ACCESS_TYPES)}')
        limit = 1 << (8 * self.width)
        for name in ('reset', 'writable'):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or not 0 <= v < limit):
                raise ValueError(f'{where}.{name}: {v!r} does not fit in {self.width} bytes')
        for name in ('read', 'write'):
            f = getattr(self, name)
            if f is not None and not callable(f):
                raise TypeError(f'{where}.{name}: must be callable')

    def to_json(self) -> dict:
        out = {'name': self.name, 'offset': self.offset, 'width': self.width, 'access': self.access,
               'reset': value_to_json(self.reset), 'trace': self.trace,
               'read': self.read is not None, 'write': self.write is not None}
        if self.writable is not None:
            out['writable'] = value_to_json(self.writable)
        if self.widths is not None:
            out['widths'] = list(self.widths)
        if self.description:
            out['description'] = self.description
        return out


@dataclass
class Bar:
    """A Base Address Register served by a register table. ``size`` is a
    power of two (at least 16 for memory); offsets no register covers read
    as zero and ignore writes."""

    size: int
    registers: Sequence[Register] = ()
    kind: str = 'memory'
    is64: bool = False
    prefetchable: bool = False

    def to_json(self, index: int) -> dict:
        return {'index': index, 'size': self.size, 'kind': self.kind, 'is64': self.is64,
                'prefetchable': self.prefetchable, 'registers': [r.to_json() for r in self.registers]}


@dataclass
class Interrupts:
    """INTx (pin A), MSI vectors (1, 2, 4 ... 32) and MSI-X vectors the device raises."""

    intx: bool = False
    msi: int = 0
    msix: int = 0

    def to_json(self) -> dict:
        return {'intx': self.intx, 'msi': self.msi, 'msix': self.msix}


def capability(id: str, **fields) -> dict:
    """A PCI capability: ``capability('pm')``, ``capability('pcie', flr=True)``,
    ``capability('vendor', data=b'...')``. MSI and MSI-X come from :class:`Interrupts`."""
    out: dict = {'id': id}
    for k, v in fields.items():
        out[k] = list(v) if isinstance(v, (bytes, bytearray)) else v
    return out
