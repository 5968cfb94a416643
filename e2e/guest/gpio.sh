#!/bin/sh
# Guest side of the gpio scenario: the PCI-IDIO-16 driven by Linux's
# gpio-pci-idio-16. Outputs are set through the legacy GPIO sysfs and
# checked by the harness in the device's log; inputs are changed by the
# harness (on an "E2E-REQ: input V" line) and read here; the interrupt is
# consumed through the GPIO character device (gpioev: edge events on IIN0)
# and counted in /proc/interrupts.
#
# Guest kernel quirk (not the device's doing; real boards hit it too): all 16
# input interrupts of the driver's regmap-irq chip share one status bit, and
# the regmap-irq thread calls handle_nested_irq(irq_find_mapping(...)) for
# each of them; for a line that has no virq mapping yet that is irq 0 (the
# timer, which has no thread handler) and the guest oopses. Exporting every
# other input line through sysfs first creates their mappings (gpiod_export
# calls gpiod_to_irq).
. /e2e/common.sh
fail() { echo "E2E-GPIO: FAIL $*"; [ -f /tmp/ev ] && sed 's/^/E2E-GPIOEV: /' /tmp/ev; exit 1; }

dev=$(find_dev 0x494f 0x0dc8) || fail "no 494f:0dc8 function"
bdf=${dev##*/}
drv=-; [ -e $dev/driver ] && drv=$(basename $(readlink $dev/driver))
echo "E2E-GPIO: device=$bdf driver=$drv irq=$(cat $dev/irq)"

chip=
for g in /sys/class/gpio/gpiochip*; do
  [ "$(basename $(readlink -f $g/device))" = "$bdf" ] && chip=$g
done
[ -n "$chip" ] || fail "no gpiochip for $bdf"
base=$(cat $chip/base)
cdev=$(ls -d $dev/gpiochip* 2>/dev/null | head -n1); cdev=/dev/${cdev##*/}
echo "E2E-GPIO: chip=${chip##*/} base=$base ngpio=$(cat $chip/ngpio) label=$(cat $chip/label) cdev=$cdev"

# line N NAME: exports line N of the chip, prints its sysfs dir
# (gpioNNN, or the line's name on kernels that name it so).
line() {
  n=$((base + $1))
  echo $n > /sys/class/gpio/export 2>/dev/null
  if [ -d /sys/class/gpio/gpio$n ]; then echo /sys/class/gpio/gpio$n; else echo /sys/class/gpio/$2; fi
}
OUT0=$(line 0 OUT0); OUT9=$(line 9 OUT9)
for n in $(seq 17 31); do line $n IIN$((n - 16)) > /dev/null; done
IIN1=$(line 17 IIN1); IIN15=$(line 31 IIN15)
[ -e $OUT0/value ] && [ -e $IIN15/value ] || fail "export failed"

# Outputs: the harness expects the device log to show out=0x0001, then 0x0201, then 0x0200.
echo 1 > $OUT0/value || fail "set OUT0"
echo 1 > $OUT9/value || fail "set OUT9"
echo 0 > $OUT0/value || fail "clear OUT0"
echo "E2E-GPIO: outputs set OUT0=1 OUT9=1 OUT0=0"

# Inputs and the interrupt: edge events on IIN0 (line 16); the device
# changes its inputs twice.
gpioev $cdev 16 2 40 > /tmp/ev 2>&1 &
evpid=$!
wait_for 10 grep -q ready /tmp/ev || fail "gpioev did not start"
intx=$(cat $dev/irq)
round=0
for want in 0x8001 0x0000; do
  round=$((round + 1))
  v15=$(( (want >> 15) & 1 ))
  b=$(irq_count $intx)
  echo "E2E-REQ: input $want"
  wait_for 30 grep -q "^event $round " /tmp/ev || fail "round $round: no edge event on IIN0"
  ev=$(grep "^event $round " /tmp/ev)
  wait_for 10 sh -c "[ \$(cat $IIN15/value) = $v15 ]"
  echo "E2E-GPIO: round=$round input=$want IIN0=${ev##*value=} IIN1=$(cat $IIN1/value) IIN15=$(cat $IIN15/value) event=$(echo $ev | cut -d' ' -f3)"
  echo "E2E-IRQ: round=$round intx=$intx before=$b after=$(irq_count $intx)"
done
wait $evpid; r=$?
sed 's/^/E2E-GPIOEV: /' /tmp/ev
echo "E2E-GPIOEV: exit=$r"
grep -E "^ *$intx:" /proc/interrupts | sed 's/^/E2E-INTERRUPTS: /'
for n in 0 9 $(seq 17 31); do echo $((base + n)) > /sys/class/gpio/unexport 2>/dev/null; done
echo "E2E-GPIO: finished"
