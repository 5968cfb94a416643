#!/bin/sh
# Boot 2 of the virtio-blk-nbd scenario: the disk is an NBD export. The
# files of boot 1 read back; then the guest asks the harness to kill the
# NBD server (it comes back 2 s later) and, while it is down, writes 4 MiB
# into a file with O_DIRECT and fsync: the writes stall, then complete once
# the device has reconnected. After a remount with dropped caches the file
# and the files of boot 1 read back intact.
. /e2e/common.sh
. /e2e/blk-lib.sh
blk_info
blk_mount
blk_sums boot2
dd if=/dev/urandom of=/tmp/during.bin bs=64k count=64 2>/dev/null
want=$(sha256sum < /tmp/during.bin | cut -d' ' -f1)
echo "E2E-REQ: nbd-restart"
sleep 0.3
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/tmp/during.bin of=/mnt/during.bin bs=64k oflag=direct conv=fsync 2>/tmp/dd.err || fail "write during.bin across the restart: $(cat /tmp/dd.err)"
sync
t1=$(cut -d' ' -f1 /proc/uptime)
echo "E2E-NBD: written want=$want got=$(sha256sum < /mnt/during.bin | cut -d' ' -f1) seconds=$(awk "BEGIN { print $t1 - $t0 }")"
umount /mnt || fail "umount"
drop_caches
blk_mount
echo "E2E-NBD: remount got=$(sha256sum < /mnt/during.bin | cut -d' ' -f1)"
blk_sums after
umount /mnt || fail "umount after remount"
echo "E2E-BLK: nbd restart done"
