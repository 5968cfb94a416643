# Helpers for the guest test scripts (sourced).

# find_dev VENDOR DEVICE: prints the sysfs dir of the first matching function.
find_dev() {
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat $d/vendor)" = "$1" ] && [ "$(cat $d/device)" = "$2" ]; then echo $d; return 0; fi
  done
  return 1
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_for() {
  t=$(( $1 * 10 )); shift
  while [ $t -gt 0 ]; do
    "$@" && return 0
    sleep 0.1
    t=$((t - 1))
  done
  return 1
}

# irq_count IRQ: total count of interrupt line IRQ in /proc/interrupts.
irq_count() {
  awk -v i="$1:" '$1 == i { s = 0; for (k = 2; k <= NF && $k ~ /^[0-9]+$/; k++) s += $k; print s }' /proc/interrupts
}

# irq_count_named WORD: total count of the lines of /proc/interrupts that mention WORD.
irq_count_named() {
  awk -v w="$1" 'index($0, w) { for (k = 2; k <= NF && $k ~ /^[0-9]+$/; k++) s += $k } END { print s + 0 }' /proc/interrupts
}

# I/O BAR byte access through sysfs (resourceN of an I/O BAR supports read/write).
io_rd8() { dd if=$1 bs=1 count=1 skip=$(( $2 )) 2>/dev/null | od -An -tu1 | tr -d ' \n'; }
io_wr8() { printf "\\$(printf %o $(( $3 )))" | dd of=$1 bs=1 count=1 seek=$(( $2 )) conv=notrunc 2>/dev/null; }
io_wr32() { for k in 0 1 2 3; do io_wr8 $1 $(( $2 + k )) $(( ($3 >> (8 * k)) & 255 )); done; }
io_hex() { dd if=$1 bs=1 count=$3 skip=$(( $2 )) 2>/dev/null | od -An -tx1 -v | tr -d ' \n'; }
