#!/bin/sh
# Boot 2 of the virtio-blk scenario, on the same image: the files read back
# intact, then fstrim discards the filesystem's free space (the host sees
# the image's allocated blocks shrink).
. /e2e/common.sh
. /e2e/blk-lib.sh
$BLK_INFO
blk_mount
blk_sums boot2
out=$(fstrim -v /mnt 2>&1) || fail "fstrim: $out"
echo "E2E-BLK: fstrim $out"
umount /mnt || fail "umount"
echo "E2E-BLK: verify done"
