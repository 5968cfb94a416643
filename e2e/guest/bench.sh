#!/bin/sh
# Guest side of the bench scenario.
# 1. bench (4d55:0001): BAR 0 (4 KiB of device RAM) is read and written
#    through /sys/bus/pci/devices/*/resource0 (mmap, by barmem); the data
#    must round-trip (the harness also reads it back from the device).
# 2. posted (4d55:0e2e, e2e/devices/posted.mjs): a burst of posted writes to
#    its unmappable BAR 0 while the harness holds that device stopped, so
#    that QEMU coalesces them into REGION_WRITE_MULTI; afterwards the device
#    must have seen every write, in order.
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

p=$(find_dev 0x4d55 0x0e2e) || fail "no 4d55:0e2e function"
echo 1 > $p/enable 2>/dev/null
P0=$p/resource0
N=3000
echo "E2E-POSTED: before count=$(barmem $P0 read 0 4)"
echo "E2E-REQ: stop posted"
sleep 1
barmem $P0 flood 8 $N 1000 || fail "flood"
echo "E2E-REQ: continue posted"
# le32 hex -> number
le32() { h=$1; echo $(( 0x${h:6:2}${h:4:2}${h:2:2}${h:0:2} )); }
echo "E2E-POSTED: writes=$N count=$(le32 $(barmem $P0 read 0 4)) inorder=$(le32 $(barmem $P0 read 4 4)) last=$(le32 $(barmem $P0 read 12 4))"
