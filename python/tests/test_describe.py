"""What a device says in HELLO, and the mistakes caught before that."""
import json
import unittest

from fake_muser import FakeMuser  # noqa: F401 - puts the package on sys.path
from muser import Bar, Device, Identity, Interrupts, Register, capability, options


class DescribeTest(unittest.TestCase):
    def test_hello_carries_the_whole_device(self):
        device = Device(
            Identity(vendor_id=0x1B36, device_id=0x0011, class_code=0x088000, revision=1),
            name='pv',
            bars={2: Bar(size=4096, kind='memory', registers=[
                Register('events', offset=0, width=1, read=lambda d: 3, write=lambda v, d: None),
                Register('big', offset=8, width=8, access='ro', reset=2**60 + 1),
            ])},
            config=[Register('cfg', offset=0xE0, width=4, write=lambda v, d: None)],
            interrupts=Interrupts(intx=True, msix=2),
            capabilities=[capability('pm'), capability('vendor', data=b'\x01\x02')],
            state={'n': 1},
        )
        hello = device.describe()
        self.assertEqual(hello['version'], 1)
        d = hello['device']
        self.assertEqual(d['identity']['vendorId'], 0x1B36)
        self.assertEqual(d['bars'][0]['index'], 2)
        events, big = d['bars'][0]['registers']
        self.assertEqual((events['read'], events['write']), (True, True))
        self.assertEqual((big['read'], big['write']), (False, False))
        self.assertEqual(big['reset'], hex(2**60 + 1), 'values above 2**53 travel as hex strings')
        self.assertEqual(d['config'][0]['write'], True)
        self.assertEqual(d['capabilities'][1], {'id': 'vendor', 'data': [1, 2]})
        self.assertEqual(d['state'], {'n': 1})
        json.dumps(hello)  # all of it is JSON

    def test_a_device_without_state_says_none(self):
        d = Device(Identity(vendor_id=1, device_id=2)).describe()['device']
        self.assertNotIn('state', d)

    def test_mistakes_name_the_field(self):
        with self.assertRaisesRegex(ValueError, r'bars\[0\]\.registers\[0\] \(x\)\.width: 3'):
            Device(Identity(vendor_id=1, device_id=2), bars={0: Bar(size=16, registers=[Register('x', offset=0, width=3)])})
        with self.assertRaisesRegex(ValueError, r'\(x\)\.offset'):
            Device(Identity(vendor_id=1, device_id=2), bars={0: Bar(size=16, registers=[Register('x', offset=2, width=4)])})
        with self.assertRaisesRegex(ValueError, r'\(x\)\.reset: 256 does not fit in 1 bytes'):
            Device(Identity(vendor_id=1, device_id=2), bars={0: Bar(size=16, registers=[Register('x', offset=0, width=1, reset=256)])})
        with self.assertRaisesRegex(TypeError, r'config\[0\] \(c\)\.read: config registers cannot have read callbacks'):
            Device(Identity(vendor_id=1, device_id=2), config=[Register('c', offset=0x40, width=4, read=lambda d: 0)])
        with self.assertRaisesRegex(ValueError, r'bars: 6 is not a BAR index'):
            Device(Identity(vendor_id=1, device_id=2), bars={6: Bar(size=16)})
        with self.assertRaises(TypeError):
            Device(Identity(vendor_id=1, device_id=2), state={'f': object()})

    def test_a_device_not_served_says_so(self):
        device = Device(Identity(vendor_id=1, device_id=2))
        with self.assertRaisesRegex(RuntimeError, 'not served'):
            device.trigger(0)

    def test_options_are_the_arguments_muser_passed_on(self):
        self.assertEqual(options(['--size=4', '--fast', 'x']), {'size': '4', 'fast': True})


if __name__ == '__main__':
    unittest.main()
