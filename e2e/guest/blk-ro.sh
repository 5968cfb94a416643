#!/bin/sh
# Boot 3 of the virtio-blk scenario: the same image as a read-only disk.
# The guest sees it read-only, reads the files, and every way of writing
# is refused (the host checks the image did not change).
. /e2e/common.sh
. /e2e/blk-lib.sh
blk_info
blk_mount ro
blk_sums ro
# refused: prints "refused" when COMMAND fails, "accepted" when it succeeds
# (and keeps why, for the log)
: > /tmp/why
try() { if "$@" >/tmp/try.err 2>&1; then echo accepted; else echo refused; echo "$*: $(head -n 1 /tmp/try.err)" >> /tmp/why; fi; }
echo "E2E-BLK: ro touch=$(try touch /mnt/new) remount=$(try mount -o remount,rw /mnt)"
umount /mnt || fail "umount"
echo "E2E-BLK: ro dd=$(try dd if=/dev/zero of=/dev/vda bs=4096 count=1 oflag=direct conv=fsync) discard=$(try blkdiscard /dev/vda)"
while read -r l; do echo "E2E-BLK: why $l"; done < /tmp/why
echo "E2E-BLK: ro done"
