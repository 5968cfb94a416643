"""The program's side of the protocol, against a scripted muser."""
import contextlib
import io
import json
import mmap
import os
import struct
import unittest

from fake_muser import FakeMuser, memfd
from muser import Bar, Device, DeviceError, Identity, Register
from muser.wire import ACCESS, DIRTY_PAIR, DMA_READ, U32, U64, WRITE_ACCESS, Kind

EPERM, EFAULT, EIO, ENOSPC = 1, 14, 5, 28


def read(bar, width, offset):
    return ACCESS.pack(bar, width, offset)


def write(bar, width, offset, value):
    return WRITE_ACCESS.pack(bar, width, offset, value)


class RuntimeTest(unittest.TestCase):
    def setUp(self):
        self.log = []
        self.state = {'count': 0}

        def count_write(value, device):
            self.state['count'] += value
            device.trigger(1)

        def fail(value, device):
            if value == 1:
                raise DeviceError(ENOSPC, 'full')
            raise RuntimeError('a bug in the device')

        def dma_read(device):
            return int.from_bytes(device.dma.read(0x1000, 8), 'little')

        def dma_write(value, device):
            device.dma.write(0x1000, value.to_bytes(8, 'little'))

        def later(value, device):
            device.call_later(0, lambda: device.log(f'later {value}'))

        self.device = Device(
            Identity(vendor_id=0x1234, device_id=0x5678),
            bars={0: Bar(size=4096, registers=[
                Register('count', offset=0, width=4, read=lambda d: self.state['count'], write=count_write),
                Register('fail', offset=4, width=4, access='wo', write=fail),
                Register('dma', offset=8, width=8, read=dma_read, write=dma_write),
                Register('later', offset=16, width=4, access='wo', write=later),
                Register('plain', offset=20, width=4),
                Register('wide', offset=24, width=1, read=lambda d: 300),
            ])},
            config=[Register('cfg', offset=0x40, width=4, write=lambda v, d: self.log.append(('cfg', v)))],
            state=self.state,
            on_reset=lambda reason, d: self.log.append(('reset', reason)),
        )
        self.muser = FakeMuser(self.device)

    def tearDown(self):
        self.muser.close()
        self.assertIsNone(self.muser.error)

    def test_a_read_asks_the_callback(self):
        self.state['count'] = 42
        id = self.muser.request(Kind.READ, read(0, 4, 0))
        reply = self.muser.expect_reply(id, Kind.READ)
        self.assertEqual(U64.unpack(reply.payload)[0], 42)

    def test_a_write_runs_the_callback_and_its_interrupt_comes_before_the_reply(self):
        id = self.muser.request(Kind.WRITE, write(0, 4, 0, 5))
        trigger = self.muser.receive()
        self.assertEqual((trigger.kind, trigger.is_event, U32.unpack(trigger.payload)[0]), (Kind.TRIGGER, True, 1))
        self.muser.expect_reply(id, Kind.WRITE)
        self.assertEqual(self.state['count'], 5)

    def test_callback_errors_become_error_replies(self):
        with contextlib.redirect_stderr(io.StringIO()) as printed:
            self.callback_errors()
        self.assertIn('RuntimeError: a bug in the device', printed.getvalue(), 'a bug is printed with its traceback')

    def callback_errors(self):
        id = self.muser.request(Kind.WRITE, write(0, 4, 4, 1))
        reply = self.muser.expect_reply(id, Kind.WRITE)
        self.assertEqual((reply.is_error, reply.errno, reply.payload), (True, ENOSPC, b'full'))
        id = self.muser.request(Kind.WRITE, write(0, 4, 4, 2))
        reply = self.muser.expect_reply(id, Kind.WRITE)
        self.assertEqual((reply.is_error, reply.errno), (True, EIO))
        id = self.muser.request(Kind.READ, read(0, 1, 24))
        reply = self.muser.expect_reply(id, Kind.READ)
        self.assertEqual((reply.is_error, reply.errno), (True, EIO), 'a value wider than the register is an error, not a wrap')

    def test_dma_goes_through_muser_without_a_mapping(self):
        id = self.muser.request(Kind.READ, read(0, 8, 8))
        dma = self.muser.receive()
        self.assertEqual(dma.kind, Kind.DMA_READ)
        self.assertEqual(DMA_READ.unpack(dma.payload), (0x1000, 8))
        self.muser.reply(dma, (0x1122334455667788).to_bytes(8, 'little'))
        reply = self.muser.expect_reply(id, Kind.READ)
        self.assertEqual(U64.unpack(reply.payload)[0], 0x1122334455667788)
        # An error reply reaches the callback as DmaError, and the access fails with its errno.
        id = self.muser.request(Kind.READ, read(0, 8, 8))
        self.muser.reply_error(self.muser.receive(), EFAULT, 'not mapped')
        reply = self.muser.expect_reply(id, Kind.READ)
        self.assertEqual((reply.is_error, reply.errno), (True, EFAULT))

    def test_dma_larger_than_max_data_goes_in_pieces(self):
        # The 'later' register's callback, swapped for a large read.
        self.device.bars[0].registers[3].write = lambda v, d: self.log.append(d.dma.read(0x10000, 10000))
        id = self.muser.request(Kind.WRITE, write(0, 4, 16, 0))
        pieces = []
        for _ in range(3):  # maxData is 4096 in this session
            m = self.muser.receive()
            address, length = DMA_READ.unpack(m.payload)
            pieces.append((address, length))
            self.muser.reply(m, bytes([len(pieces)]) * length)
        self.muser.expect_reply(id, Kind.WRITE)
        self.assertEqual(pieces, [(0x10000, 4096), (0x11000, 4096), (0x12000, 1808)])
        self.assertEqual(self.log[0], b'\x01' * 4096 + b'\x02' * 4096 + b'\x03' * 1808)

    def test_mapped_memory_is_used_in_place_and_writes_are_reported_dirty(self):
        fd = memfd(0x2000)
        view = mmap.mmap(fd, 0x2000)
        self.muser.event(Kind.MAP, json.dumps({'iova': 0, 'size': 0x2000, 'offset': 0, 'prot': 3}).encode(), fds=[fd])
        os.close(fd)
        self.muser.event(Kind.DMA_ALLOWED, U32.pack(1))
        view[0x1000:0x1008] = (77).to_bytes(8, 'little')
        id = self.muser.request(Kind.READ, read(0, 8, 8))
        reply = self.muser.expect_reply(id, Kind.READ)  # no DMA_READ in between
        self.assertEqual(U64.unpack(reply.payload)[0], 77)
        id = self.muser.request(Kind.WRITE, write(0, 8, 8, 99))
        dirty = self.muser.receive()
        self.assertEqual(dirty.kind, Kind.DIRTY)
        self.assertEqual(DIRTY_PAIR.unpack(dirty.payload), (0x1000, 8))
        self.muser.expect_reply(id, Kind.WRITE)
        self.assertEqual(int.from_bytes(view[0x1000:0x1008], 'little'), 99)
        # Bus Master Enable cleared: the mapping is not used, muser is asked (and refuses).
        self.muser.event(Kind.DMA_ALLOWED, U32.pack(0))
        id = self.muser.request(Kind.READ, read(0, 8, 8))
        self.muser.reply_error(self.muser.receive(), EPERM, 'Bus Master Enable is clear')
        self.assertEqual(self.muser.expect_reply(id, Kind.READ).errno, EPERM)
        # UNMAP is answered once the mapping is gone.
        id = self.muser.request(Kind.UNMAP, json.dumps({'iova': 0, 'size': 0x2000}).encode())
        self.muser.expect_reply(id, Kind.UNMAP)
        self.assertEqual(self.device.dma.mapped, [])
        view.close()

    def test_sync_is_answered_after_the_dirty_report(self):
        fd = memfd(0x2000)
        self.muser.event(Kind.MAP, json.dumps({'iova': 0, 'size': 0x2000, 'offset': 0, 'prot': 3}).encode(), fds=[fd])
        os.close(fd)
        self.muser.event(Kind.DMA_ALLOWED, U32.pack(1))
        self.muser.event(Kind.CONNECT)
        id = self.muser.request(Kind.SYNC)
        self.muser.expect_reply(id, Kind.SYNC)

    def test_quiesce_hands_over_the_state_and_holds_timers_until_resume(self):
        id = self.muser.request(Kind.QUIESCE)
        self.assertEqual(json.loads(self.muser.expect_reply(id, Kind.QUIESCE).payload), {'count': 0})
        id = self.muser.request(Kind.WRITE, write(0, 4, 16, 7))
        self.muser.expect_reply(id, Kind.WRITE)
        id = self.muser.request(Kind.LOAD_STATE, json.dumps({'count': 9}).encode())
        self.muser.expect_reply(id, Kind.LOAD_STATE)
        self.assertIs(self.device.state, self.state, 'the state object is updated in place')
        self.assertEqual(self.state, {'count': 9})
        self.muser.event(Kind.RESUME)
        log = self.muser.receive()
        self.assertEqual((log.kind, log.payload[4:]), (Kind.LOG, b'later 7'), 'the timer ran only after RESUME')

    def test_reset_and_config_writes_reach_the_device(self):
        self.muser.event(Kind.CONFIG_WRITE, json.dumps({'name': 'cfg', 'value': 5}).encode())
        id = self.muser.request(Kind.RESET, json.dumps({'reason': 'flr'}).encode())
        self.muser.expect_reply(id, Kind.RESET)
        self.assertEqual(self.log, [('cfg', 5), ('reset', 'flr')])

    def test_stored_registers_are_reached_by_name(self):
        id = self.muser.request(Kind.WRITE, write(0, 4, 16, 0))  # any access, to run code on the device's thread
        self.muser.expect_reply(id, Kind.WRITE)
        self.device.set_register  # noqa: B018 - exists
        with self.assertRaisesRegex(ValueError, 'has a read callback'):
            self.device._runtime._stored('count')
        with self.assertRaisesRegex(KeyError, 'no register is named'):
            self.device._runtime._stored('nope')


class HelloTest(unittest.TestCase):
    def test_a_refused_device_raises_spec_error_with_muser_s_words(self):
        muser = FakeMuser(Device(Identity(vendor_id=1, device_id=2)), accept_hello=False)
        muser.reply_error(muser.hello, 22, 'device.bars[0].size: 3 is not a power of two')
        muser.thread.join(5)
        self.assertIn('device.bars[0].size', str(muser.error))
        muser.sock.close()

    def test_framing_survives_messages_split_anywhere(self):
        device = Device(Identity(vendor_id=1, device_id=2),
                        bars={0: Bar(size=16, registers=[Register('r', offset=0, width=4, read=lambda d: 7)])})
        muser = FakeMuser(device)
        data = b''.join(struct.pack('<HHIII', 200 + i, Kind.READ, 24, 0, 0) + read(0, 4, 0) for i in range(3))
        for b in data:
            muser.sock.send(bytes([b]))
        for i in range(3):
            self.assertEqual(U64.unpack(muser.expect_reply(200 + i, Kind.READ).payload)[0], 7)
        muser.close()


if __name__ == '__main__':
    unittest.main()
