"""Errors a device program raises and sees."""
from __future__ import annotations

import errno as _errno


class DeviceError(Exception):
    """Raise it from a callback to fail the guest's access with ``errno``
    (any other exception fails it with EIO)."""

    def __init__(self, errno: int, message: str = ''):
        super().__init__(message or _errno.errorcode.get(errno, f'errno {errno}'))
        self.errno = errno


class DmaError(DeviceError):
    """A DMA access muser refused: EFAULT (not mapped), EPERM (no right, or
    Bus Master Enable clear), EINVAL (a bad range)."""


class SpecError(Exception):
    """muser refused the device this program described (the message names the field)."""
