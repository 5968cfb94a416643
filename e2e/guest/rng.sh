#!/bin/sh
# virtio-rng: the hw_random core picks the virtio device, and /dev/hwrng
# returns data (two reads differ).
. /e2e/common.sh
fail() { echo "E2E-RNG: FAIL $*"; exit 1; }
R=/sys/class/misc/hw_random
wait_for 20 grep -q virtio $R/rng_current || fail "rng_current is '$(cat $R/rng_current 2>/dev/null)'"
rd() { dd if=/dev/hwrng bs=32 count=1 iflag=fullblock 2>/dev/null | od -An -tx1 -v | tr -d ' \n'; }
a=$(rd); b=$(rd)
v=$(ls -d /sys/bus/virtio/drivers/virtio_rng/virtio* 2>/dev/null | head -n 1)
p=$(dirname "$(readlink -f "$v")")
echo "E2E-RNG: info driver=$(basename "$(readlink -f "$v/driver")") pcidriver=$(basename "$(readlink "$p/driver")") pci=$(cat $p/vendor):$(cat $p/device)"
echo "E2E-RNG: current=$(cat $R/rng_current) available=$(cat $R/rng_available | tr ' ' ,) read1=$a read2=$b"
