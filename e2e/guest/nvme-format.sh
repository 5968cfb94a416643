#!/bin/sh
# Boot 1 of the NVMe scenario: the virtio-blk boot 1 (mkfs, write, remount
# with dropped caches, read back) on /dev/nvme0n1.
. /e2e/common.sh
. /e2e/nvme-lib.sh
. /e2e/blk-format.sh
