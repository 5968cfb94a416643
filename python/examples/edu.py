#!/usr/bin/env python3
"""QEMU's "edu" teaching device (docs/specs/edu.rst in QEMU), in Python:
a liveness check, a factorial unit, interrupts raised on demand, and a DMA
engine that copies between guest memory and a 4 KiB buffer of its own.

    muser run python/examples/edu.py /tmp/edu.sock

Registers of BAR 0 (1 MiB): 0x00 id, 0x04 liveness (reads the inverse of
what was written), 0x08 factorial, 0x20 status (bit 7: interrupt when a
factorial is done), 0x24 interrupt status, 0x60 raise, 0x64 acknowledge,
0x80 DMA source, 0x88 DMA destination, 0x90 DMA count, 0x98 DMA command
(bit 0 start, bit 1 direction: 0 guest memory to the buffer, 1 back; bit 2
interrupt 0x100 when done). The buffer is at device address 0x40000.
Everything the device holds is in ``state``, so it migrates.
"""
from math import factorial

from muser import Bar, Device, DeviceError, Identity, Interrupts, Register

BUFFER_ADDRESS = 0x40000
BUFFER_SIZE = 4096
STATUS_COMPUTING = 0x01
STATUS_IRQ_ON_FACTORIAL = 0x80
IRQ_FACTORIAL = 0x001
IRQ_DMA = 0x100
DMA_START, DMA_TO_GUEST, DMA_IRQ = 0x1, 0x2, 0x4
MASK32 = 0xFFFF_FFFF


def power_on_state():
    return {'liveness': 0, 'factorial': 1, 'status': 0, 'irq_status': 0,
            'dma_src': 0, 'dma_dst': 0, 'dma_count': 0, 'dma_cmd': 0,
            'buffer': bytes(BUFFER_SIZE).hex()}


state = power_on_state()


def raise_irq(bits, device):
    state['irq_status'] |= bits
    device.trigger(0)


def write_factorial(n, device):
    state['factorial'] = factorial(n) & MASK32 if n < 10_000 else 0
    if state['status'] & STATUS_IRQ_ON_FACTORIAL:
        raise_irq(IRQ_FACTORIAL, device)


def write_dma_cmd(cmd, device):
    state['dma_cmd'] = cmd
    if cmd & DMA_START:
        # As QEMU's edu, the copy happens a moment later, not within the guest's write.
        device.call_later(0.001, run_dma, device)


def in_buffer(address, count):
    if not (BUFFER_ADDRESS <= address and address + count <= BUFFER_ADDRESS + BUFFER_SIZE):
        raise DeviceError(22, f'DMA range {address:#x}+{count} is outside the buffer at {BUFFER_ADDRESS:#x}')
    return address - BUFFER_ADDRESS


def run_dma(device):
    cmd, count = state['dma_cmd'], state['dma_count']
    src, dst = state['dma_src'], state['dma_dst']
    buffer = bytearray.fromhex(state['buffer'])
    try:
        if cmd & DMA_TO_GUEST:
            at = in_buffer(src, count)
            how = 'mapped' if device.dma.is_direct(dst, count, write=True) else 'through muser'
            device.dma.write(dst, buffer[at:at + count])
            device.log(f'dma {count} bytes from the buffer to {dst:#x} ({how})', 'debug')
        else:
            at = in_buffer(dst, count)
            how = 'mapped' if device.dma.is_direct(src, count) else 'through muser'
            buffer[at:at + count] = device.dma.read(src, count)
            state['buffer'] = buffer.hex()
            device.log(f'dma {count} bytes from {src:#x} to the buffer ({how})', 'debug')
    except DeviceError as e:
        device.log(f'dma failed: {e}', 'warn')
    state['dma_cmd'] &= ~DMA_START
    if cmd & DMA_IRQ:
        raise_irq(IRQ_DMA, device)


def field(name, mask=MASK32):
    """Read and write callbacks that keep a register in ``state``."""
    def read(device):
        return state[name]

    def write(value, device):
        state[name] = value & mask
    return read, write


def register(name, offset, width=4, access='rw', read=None, write=None, widths=None):
    return Register(name, offset=offset, width=width, access=access, read=read, write=write, widths=widths)


def reset(reason, device):
    state.clear()
    state.update(power_on_state())


registers = [
    Register('id', offset=0x00, width=4, access='ro', reset=0x010000ED),
    register('liveness', 0x04, read=lambda d: ~state['liveness'] & MASK32, write=field('liveness')[1]),
    register('factorial', 0x08, read=field('factorial')[0], write=write_factorial),
    register('status', 0x20, read=lambda d: state['status'] & STATUS_IRQ_ON_FACTORIAL,
             write=field('status', STATUS_IRQ_ON_FACTORIAL)[1]),
    register('irq_status', 0x24, access='ro', read=field('irq_status')[0]),
    register('irq_raise', 0x60, access='wo', write=raise_irq),
    register('irq_ack', 0x64, access='wo', write=lambda v, d: state.update(irq_status=state['irq_status'] & ~v)),
    register('dma_src', 0x80, width=8, widths=[4, 8], read=field('dma_src')[0], write=field('dma_src', 2**64 - 1)[1]),
    register('dma_dst', 0x88, width=8, widths=[4, 8], read=field('dma_dst')[0], write=field('dma_dst', 2**64 - 1)[1]),
    register('dma_count', 0x90, width=8, widths=[4, 8], read=field('dma_count')[0],
             write=field('dma_count', 2**64 - 1)[1]),
    register('dma_cmd', 0x98, width=8, widths=[4, 8], read=field('dma_cmd')[0], write=write_dma_cmd),
]

device = Device(
    Identity(vendor_id=0x1234, device_id=0x11E8, class_code=0xFF0000, revision=0x10),
    name='edu',
    bars={0: Bar(size=1 << 20, registers=registers)},
    interrupts=Interrupts(intx=True, msi=1),
    state=state,
    on_reset=reset,
)

if __name__ == '__main__':
    device.serve()
