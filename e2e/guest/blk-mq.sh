#!/bin/sh
# virtio-blk with 2 queues on 2 vCPUs. blk-mq maps each CPU to one hardware
# queue (/sys/block/vda/mq/Q/cpu_list); each queue completes on its own
# MSI-X vector ("virtioN-req.Q" in /proc/interrupts). From each CPU in turn,
# 1 MiB is written with O_DIRECT: the vector of that CPU's queue must count
# the completions. The data is then read back from the other CPU.
. /e2e/common.sh
. /e2e/blk-lib.sh
blk_info
vdev=$(basename "$(readlink -f /sys/block/vda/device)")
queue_of() {  # CPU -> the hardware queue blk-mq maps it to
  for q in $(ls /sys/block/vda/mq); do
    for c in $(cat /sys/block/vda/mq/$q/cpu_list | tr ',' ' '); do [ "$c" = "$1" ] && { echo $q; return; }; done
  done
}
for c in 0 1; do
  o=$(( 1 - c ))
  q=$(queue_of $c)
  dd if=/dev/urandom of=/tmp/src$c bs=64k count=16 2>/dev/null
  before=$(irq_count_named $vdev-req.$q)
  taskset -c $c dd if=/tmp/src$c of=/dev/vda bs=64k seek=$(( c * 32 )) oflag=direct conv=fsync 2>/dev/null || fail "write from cpu $c"
  after=$(irq_count_named $vdev-req.$q)
  taskset -c $o dd if=/dev/vda of=/tmp/back$c bs=64k skip=$(( c * 32 )) count=16 iflag=direct 2>/dev/null || fail "read from cpu $o"
  echo "E2E-MQ: cpu=$c queue=$q irqs_before=$before irqs_after=$after written=$(sha256sum < /tmp/src$c | cut -d' ' -f1) readback=$(sha256sum < /tmp/back$c | cut -d' ' -f1)"
done
line="queues=$(ls /sys/block/vda/mq | wc -l)"
for q in $(ls /sys/block/vda/mq); do line="$line q${q}_cpus=$(cat /sys/block/vda/mq/$q/cpu_list | tr -d ' ') q${q}_irqs=$(irq_count_named $vdev-req.$q)"; done
echo "E2E-MQ: $line"
