#!/bin/sh
# Guest side of the DMA check: makes the gpio sample's test DMA engine
# (BAR 2 offsets 0x80-0xff, see src/samples/gpio-dma.ts) read guest memory
# the guest can also read (the BIOS area at 0xf0000, through /dev/mem) and
# compares, then runs its self test (write a pattern, read it back) on a
# page of low RAM that Linux keeps reserved (0x40000).
. /e2e/common.sh
fail() { echo "E2E-DMA: FAIL $*"; exit 1; }
dev=$(find_dev 0x494f 0x0dc8) || fail "no 494f:0dc8 function"
R=$dev/resource2
echo 1 > $dev/enable 2>/dev/null
# A device may only master the bus once the guest allows it: set Bus Master
# Enable in the command register (QEMU refuses DMA otherwise).
cmd=$(dd if=$dev/config bs=1 count=1 skip=4 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "\\$(printf %o $(( cmd | 4 )))" | dd of=$dev/config bs=1 count=1 seek=4 conv=notrunc 2>/dev/null
echo "E2E-DMA: command register 0x$(dd if=$dev/config bs=1 count=1 skip=4 2>/dev/null | od -An -tx1 | tr -d ' ')"

dma() {  # dma CMD ADDR LEN: runs a command, prints the final status
  io_wr32 $R 0x80 $2; io_wr32 $R 0x84 0; io_wr32 $R 0x88 $3
  io_wr8 $R 0x8c $1
  wait_for 20 sh -c "s=\$(dd if=$R bs=1 count=1 skip=144 2>/dev/null | od -An -tu1 | tr -d ' '); [ \$s = 2 ] || [ \$s = 3 ]"
  io_rd8 $R 0x90
}

st=$(dma 1 0xf0000 16)
win=$(io_hex $R 0xc0 16)
mem=$(dd if=/dev/mem bs=16 count=1 skip=$(( 0xf0000 / 16 )) 2>/dev/null | od -An -tx1 -v | tr -d ' \n')
echo "E2E-DMA: read addr=0xf0000 len=16 status=$st device=$win guest=$mem"
st=$(dma 3 0x40000 4096)
echo "E2E-DMA: selftest addr=0x40000 len=4096 status=$st errno=$(io_rd8 $R 0x98)"
