#!/bin/sh
# pvpanic: Linux's pvpanic-pci driver binds to the device written in Python
# (muser run python/examples/pvpanic.py) and reads the events it supports;
# then the guest panics, and the driver tells the device so.
. /e2e/common.sh
fail() { echo "E2E-PVPANIC: FAIL $*"; exit 1; }
d=$(find_dev 0x1b36 0x0011) || fail "no 1b36:0011 function"
wait_for 10 test -e $d/driver || fail "no driver bound to ${d##*/}"
echo "E2E-PVPANIC: bdf=${d##*/} driver=$(basename "$(readlink $d/driver)") capability=$(cat $d/capability 2>/dev/null) events=$(cat $d/events 2>/dev/null)"
echo "E2E-PVPANIC: panicking"
echo c > /proc/sysrq-trigger
fail "still alive after the sysrq crash"
