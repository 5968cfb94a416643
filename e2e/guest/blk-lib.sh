# Helpers for the disk guest scripts (sourced after common.sh).
# The disk is /dev/$BLK_DEV: the guest's only virtio-blk disk (vda) unless a
# script sets BLK_DEV first (nvme0n1 for the NVMe scenario), and BLK_INFO
# names the function that prints its E2E-BLK info line (default blk_info).
BLK_DEV=${BLK_DEV:-vda}
BLK_INFO=${BLK_INFO:-blk_info}

fail() { echo "E2E-BLK: FAIL $*"; exit 1; }

# The files the tests write, relative to the mount point.
BLK_FILES="seq.txt rand.bin d/s1 d/s2 d/s3 d/s4 d/s5 d/s6 d/s7 d/s8"

# blk_info: what the guest sees of the disk, on one E2E-BLK line.
blk_info() {
  wait_for 20 test -b /dev/vda || fail "no /dev/vda: virtio_blk did not bind"
  s=/sys/block/vda
  vdev=$(readlink -f $s/device)          # /sys/devices/.../PCI-FUNCTION/virtioN
  pdev=${vdev%/*}
  echo "E2E-BLK: info dev=vda driver=$(basename "$(readlink $vdev/driver)") pcidriver=$(basename "$(readlink $pdev/driver)")" \
    "pci=$(cat $pdev/vendor):$(cat $pdev/device) bytes=$(( $(cat $s/size) * 512 )) ro=$(cat $s/ro)" \
    "queues=$(ls $s/mq | wc -l) serial=$(cat $s/serial 2>/dev/null) lbs=$(cat $s/queue/logical_block_size)" \
    "discard_max=$(cat $s/queue/discard_max_bytes) write_zeroes_max=$(cat $s/queue/write_zeroes_max_bytes)"
}

# blk_sums PHASE: one E2E-SUM line per file under /mnt.
blk_sums() {
  for f in $BLK_FILES; do
    sum=$(sha256sum /mnt/$f 2>/dev/null | cut -d' ' -f1)
    echo "E2E-SUM: phase=$1 file=$f sha256=${sum:-missing} bytes=$(stat -c %s /mnt/$f 2>/dev/null)"
  done
}

# blk_mount [OPTIONS]: mounts /dev/vda on /mnt as ext4 (the ext4 driver also mounts ext2).
blk_mount() {
  mkdir -p /mnt
  mount -t ext4 ${1:+-o $1} /dev/$BLK_DEV /mnt 2>/tmp/mount.err || fail "mount ${1:-rw}: $(cat /tmp/mount.err)"
}

# drop_caches: nothing of the disk stays in the guest's page cache.
drop_caches() {
  sync
  echo 3 > /proc/sys/vm/drop_caches
  blockdev --flushbufs /dev/$BLK_DEV
}
