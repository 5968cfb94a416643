#!/bin/sh
# Boot 1 of the virtio-blk scenario: the disk binds with the image's size;
# the guest makes an ext2 filesystem, writes files (a known one, random
# ones) and a 24 MiB filler it then deletes (fstrim frees it in boot 2),
# syncs, unmounts, drops its caches, mounts again and reads everything back.
. /e2e/common.sh
. /e2e/blk-lib.sh
$BLK_INFO
mke2fs -F -b 4096 -L muser-e2e /dev/$BLK_DEV >/tmp/mkfs.log 2>&1 || fail "mke2fs: $(tail -n 3 /tmp/mkfs.log)"
blk_mount
seq 1 300000 > /mnt/seq.txt || fail "write seq.txt"
dd if=/dev/urandom of=/mnt/rand.bin bs=64k count=64 2>/dev/null || fail "write rand.bin"
mkdir -p /mnt/d
for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/mnt/d/s$i bs=$(( i * 777 )) count=1 2>/dev/null || fail "write d/s$i"; done
dd if=/dev/zero of=/mnt/filler bs=1M count=24 conv=fsync 2>/dev/null || fail "write filler"
sync
blk_sums written
rm /mnt/filler
sync
umount /mnt || fail "umount"
drop_caches
blk_mount
blk_sums remount
umount /mnt || fail "umount after remount"
echo "E2E-BLK: format done"
