#!/usr/bin/env python3
"""pvpanic-pci, as QEMU has it: the guest tells the host that it panicked.

    muser run python/examples/pvpanic.py /tmp/pvpanic.sock

Linux's pvpanic-pci driver binds to it; when the guest panics, the device logs it.
"""
from muser import Bar, Device, Identity, Register

PANICKED = 1 << 0      # the guest panicked
CRASH_LOADED = 1 << 1  # the guest is about to run a crash kernel


def events_written(value, device):
    if value & PANICKED:
        device.log('guest panicked')
    if value & CRASH_LOADED:
        device.log('guest crash kernel loaded')


device = Device(
    Identity(vendor_id=0x1B36, device_id=0x0011, class_code=0x088000, revision=1),
    name='pvpanic',
    bars={0: Bar(size=16, registers=[
        # Reads: the events the device supports. Writes: the event that happened.
        Register('events', offset=0, width=1, read=lambda device: PANICKED | CRASH_LOADED, write=events_written),
    ])},
)

if __name__ == '__main__':
    device.serve()
