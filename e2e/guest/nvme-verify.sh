#!/bin/sh
# Boot 2 of the NVMe scenario (2 vCPUs): the files read back and fstrim
# discards free space (Dataset Management), as in virtio-blk's boot 2; then
# a controller reset from the guest recovers and I/O goes on.
. /e2e/common.sh
. /e2e/nvme-lib.sh
. /e2e/blk-verify.sh
blk_mount
echo 1 > /sys/class/nvme/nvme0/reset_controller || fail "reset_controller write"
wait_for 30 grep -qx live /sys/class/nvme/nvme0/state || fail "controller state after reset: $(cat /sys/class/nvme/nvme0/state)"
dd if=/dev/urandom of=/mnt/after-reset.bin bs=64k count=16 conv=fsync 2>/dev/null || fail "write after reset"
before=$(sha256sum /mnt/after-reset.bin | cut -d' ' -f1)
sync
umount /mnt || fail "umount after reset"
drop_caches
blk_mount
after=$(sha256sum /mnt/after-reset.bin | cut -d' ' -f1)
umount /mnt || fail "umount"
echo "E2E-BLK: reset state=$(cat /sys/class/nvme/nvme0/state) written=$before readback=$after"
echo "E2E-BLK: nvme verify done"
