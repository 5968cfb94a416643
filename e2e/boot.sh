#!/usr/bin/env bash
# e2e/boot.sh SOCKET... - boots the e2e guest by hand against muser devices
# that are already listening on SOCKET..., with a shell on the console
# (type `exit` to power the guest off). Uses what setup-qemu.sh installed.
#
#   E2E_SHARED=0        guest RAM not shared (every DMA_MAP without an fd)
#   E2E_TEST=gpio,dma   also run guest test scripts before the shell
#   E2E_TRACE=1         QEMU's own log of every vfio-user message (stderr)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 SOCKET..." >&2; exit 2; }
bash "$HERE/setup-qemu.sh" >&2
INITRD=$(bash "$HERE/build-guest.sh")
args=(-accel tcg -cpu max -m 512M)
if [ "${E2E_SHARED:-1}" = 0 ]; then args+=(-machine q35)
else args+=(-machine q35,memory-backend=mem -object memory-backend-memfd,id=mem,size=512M,share=on); fi
args+=(-nodefaults -no-user-config -display none -monitor none -serial stdio -no-reboot
       -kernel "$E2E_KDIR/vmlinuz" -initrd "$INITRD"
       -append "console=ttyS0 panic=-1 loglevel=4 e2e.shell ${E2E_TEST:+e2e.test=$E2E_TEST}")
[ -n "${E2E_TRACE:-}" ] && args+=(-trace 'vfio_user*')
for s in "$@"; do
    [ -S "$s" ] || { echo "no listening socket at $s (start the device first)" >&2; exit 1; }
    args+=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"$(readlink -f "$s")\",\"type\":\"unix\"}}")
done
qemu_run "${args[@]}"
