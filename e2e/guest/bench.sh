#!/bin/sh
# Guest side of the bench scenario: BAR 0 (4 KiB of device RAM) is read and
# written through /sys/bus/pci/devices/*/resource0 (mmap, by barmem) and the
# data must round-trip. Then a burst of posted writes to BAR 1 while the
# harness holds the device stopped, so that QEMU coalesces them into
# REGION_WRITE_MULTI messages; a read of BAR 1 afterwards must still work.
. /e2e/common.sh
fail() { echo "E2E-BENCH: FAIL $*"; exit 1; }
dev=$(find_dev 0x4d55 0x0001) || fail "no 4d55:0001 function"
echo 1 > $dev/enable 2>/dev/null
R0=$dev/resource0; R1=$dev/resource1

barmem $R0 write 0x10 deadbeef0badf00d || fail "write"
echo "E2E-BENCH: bar0 write 0x10=deadbeef0badf00d readback=$(barmem $R0 read 0x10 8)"
barmem $R0 write 0x7 a5 || fail "write8"
echo "E2E-BENCH: bar0 write 0x7=a5 readback=$(barmem $R0 read 0x7 1)"
barmem $R0 fill 7 || fail "fill"
echo "E2E-BENCH: bar0 fill seed=7 check=$(barmem $R0 check 7)"
echo "E2E-BENCH: bar1 read0=$(barmem $R1 read 0 4)"

echo "E2E-REQ: stop-device"
sleep 1
barmem $R1 flood 4 5000 0x12345678 || fail "flood"
echo "E2E-REQ: continue-device"
echo "E2E-BENCH: bar1 after-flood read0=$(barmem $R1 read 0 4)"
