"""muser device programs: PCI devices written in Python, served by muser.

    from muser import Bar, Device, Identity, Register

    device = Device(
        Identity(vendor_id=0x1234, device_id=0x0001),
        bars={0: Bar(size=4096, registers=[Register('scratch', offset=0, width=4)])},
    )
    device.serve()

and ``muser run ./my_device.py /tmp/my.sock`` serves it to a VMM. The
protocol behind it is docs/device-programs.md in the muser repository.
"""
from .device import Device, serve
from .dma import Dma
from .errors import DeviceError, DmaError, SpecError
from .registers import Bar, Identity, Interrupts, Register, capability
from .wire import VERSION as PROTOCOL_VERSION

__all__ = [
    'Bar', 'Device', 'DeviceError', 'Dma', 'DmaError', 'Identity', 'Interrupts', 'PROTOCOL_VERSION', 'Register',
    'SpecError', 'capability', 'options', 'serve',
]
__version__ = '0.1.0'


def options(argv=None) -> dict:
    """The device's options muser passed on (``--name=value`` -> ``{'name': 'value'}``,
    ``--flag`` -> ``{'flag': True}``); other arguments are ignored."""
    import sys

    out = {}
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith('--'):
            name, eq, value = arg[2:].partition('=')
            out[name] = value if eq else True
    return out
