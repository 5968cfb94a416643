# Helpers for the NVMe guest scripts: the disk is the first namespace of the
# first controller, and its info line names the controller's identity.
BLK_DEV=nvme0n1
BLK_INFO=nvme_info

# sysfs_text FILE: an Identify string as sysfs shows it (space padded), trailing spaces cut, inner spaces as _.
sysfs_text() { sed 's/ *$//' "$1" | tr ' ' '_'; }

# nvme_info: what the guest sees of the controller and namespace, on one E2E-BLK line.
nvme_info() {
  wait_for 30 test -b /dev/nvme0n1 || { echo "E2E-BLK: FAIL no /dev/nvme0n1: nvme did not bind"; exit 1; }
  s=/sys/block/nvme0n1
  c=/sys/class/nvme/nvme0
  pdev=$(readlink -f $c/device)
  echo "E2E-BLK: info dev=nvme0n1 pcidriver=$(basename "$(readlink $pdev/driver)") pci=$(cat $pdev/vendor):$(cat $pdev/device) class=$(cat $pdev/class)" \
    "bytes=$(( $(cat $s/size) * 512 )) ro=$(cat $s/ro) queues=$(ls $s/mq | wc -l) lbs=$(cat $s/queue/logical_block_size)" \
    "discard_max=$(cat $s/queue/discard_max_bytes) write_zeroes_max=$(cat $s/queue/write_zeroes_max_bytes)" \
    "model=$(sysfs_text $c/model) serial=$(sysfs_text $c/serial) firmware=$(sysfs_text $c/firmware_rev) state=$(cat $c/state)"
}
