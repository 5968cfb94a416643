#!/bin/sh
# A fixed load for the NVMe doorbell measurement: 1024 4 KiB O_DIRECT
# writes one at a time, the same blocks read back one at a time (timed), then
# four readers at once (queue depth 4); the data must round-trip.
. /e2e/common.sh
. /e2e/nvme-lib.sh
. /e2e/blk-lib.sh
nvme_info
dd if=/dev/urandom of=/tmp/src bs=4k count=1024 2>/dev/null || fail "make data"
dd if=/tmp/src of=/dev/nvme0n1 bs=4k oflag=direct 2>/dev/null || fail "qd1 write"
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/nvme0n1 of=/tmp/back bs=4k count=1024 iflag=direct 2>/dev/null || fail "qd1 read"
t1=$(cut -d' ' -f1 /proc/uptime)
for i in 0 1 2 3; do
  dd if=/dev/nvme0n1 of=/tmp/part$i bs=4k skip=$(( i * 256 )) count=256 iflag=direct 2>/dev/null &
done
wait
cat /tmp/part0 /tmp/part1 /tmp/part2 /tmp/part3 > /tmp/back4
# Reads per second at queue depth 1 (uptime has 10 ms resolution; the read takes seconds under TCG).
ms=$(( $(echo $t1 | tr -d .) * 10 - $(echo $t0 | tr -d .) * 10 ))
echo "E2E-BLK: io qd1_read_ms=$ms qd1_read_iops=$(( 1024000 / (ms > 0 ? ms : 1) )) written=$(sha256sum /tmp/src | cut -c1-64) qd1=$(sha256sum /tmp/back | cut -c1-64) qd4=$(sha256sum /tmp/back4 | cut -c1-64) stat=$(tr -s ' ' < /sys/block/nvme0n1/stat | sed 's/^ //' | tr ' ' ,)"
