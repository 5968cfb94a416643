"""Guest memory, as a device program reaches it.

Memory muser may map without risk (a memfd sealed against shrinking) comes
with its file descriptor: it is mapped here and read and written in place,
with no round trip. Everything else (memory the client shared without an
fd, or one that could shrink), and everything while the guest has Bus
Master Enable clear or migration has stopped the device, goes through
muser (DMA_READ / DMA_WRITE), which applies every rule and answers errors.
"""
from __future__ import annotations

import mmap
import os
from typing import Callable

from .errors import DmaError


class _Mapping:
    __slots__ = ('iova', 'size', 'writable', 'memory')

    def __init__(self, iova: int, size: int, writable: bool, memory: mmap.mmap):
        self.iova = iova
        self.size = size
        self.writable = writable
        self.memory = memory


class Dma:
    """DMA into the memory of the connected client (``device.dma``)."""

    def __init__(self, by_message: Callable[[str, int, object], bytes], max_data: int):
        self._by_message = by_message
        self._max_data = max_data
        self._maps: list[_Mapping] = []
        #: (iova, length) written through mappings since the last DIRTY.
        self.dirty: list[tuple[int, int]] = []
        #: Bus Master Enable, as muser last said (DMA_ALLOWED).
        self.allowed = False
        #: Migration stopped the device (QUIESCE until RESUME).
        self.quiesced = False
        self.direct_reads = 0
        self.direct_writes = 0

    def read(self, address: int, length: int) -> bytes:
        """``length`` bytes of guest memory at ``address``. Raises DmaError
        (EFAULT unmapped, EPERM no right or Bus Master Enable clear)."""
        if length < 0:
            raise ValueError('length must not be negative')
        m = self._direct(address, length, False)
        if m is not None:
            self.direct_reads += 1
            at = address - m.iova
            return m.memory[at:at + length]
        out = bytearray()
        for at in range(0, length, self._max_data):
            out += self._by_message('read', address + at, min(self._max_data, length - at))
        return bytes(out)

    def write(self, address: int, data: bytes) -> None:
        """Writes ``data`` into guest memory at ``address``. Raises DmaError."""
        data = memoryview(data).cast('B')
        m = self._direct(address, len(data), True)
        if m is not None:
            self.direct_writes += 1
            at = address - m.iova
            m.memory[at:at + len(data)] = data
            if len(data):
                self.dirty.append((address, len(data)))
            return
        for at in range(0, len(data), self._max_data) if len(data) else ():
            self._by_message('write', address + at, data[at:at + self._max_data])

    def is_direct(self, address: int, length: int, write: bool = False) -> bool:
        """True when an access would use a mapping (no round trip) right now."""
        return self._direct(address, length, write) is not None

    def _direct(self, address: int, length: int, write: bool):
        if not self.allowed or self.quiesced or length == 0:
            return None
        for m in self._maps:
            if m.iova <= address and address + length <= m.iova + m.size:
                return m if (m.writable or not write) else None
        return None

    # ---- muser's messages ----

    def map(self, iova: int, size: int, offset: int, prot: int, fd: int) -> None:
        """MAP: maps the region; the fd is closed either way. A region that
        cannot be mapped here is reached through muser instead."""
        writable = bool(prot & 2)
        try:
            access = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            memory = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=access, offset=offset)
        except (OSError, ValueError):
            return
        finally:
            os.close(fd)
        self._maps.append(_Mapping(iova, size, writable, memory))

    def unmap(self, iova: int, size: int) -> None:
        """UNMAP: lets go of the region."""
        for m in list(self._maps):
            if m.iova == iova and m.size == size:
                self._maps.remove(m)
                m.memory.close()

    def unmap_all(self) -> None:
        for m in self._maps:
            m.memory.close()
        self._maps.clear()

    @property
    def mapped(self) -> list[tuple[int, int]]:
        """(iova, size) of the regions mapped here."""
        return [(m.iova, m.size) for m in self._maps]


__all__ = ['Dma', 'DmaError']
