#!/usr/bin/env bash
# e2e/build-guest.sh - builds (or reuses) the guest's busybox initramfs:
# busybox from the unpacked tree, the kernel modules the tests need (with
# their dependencies, read from each module's .modinfo), the guest scripts
# of e2e/guest/ and the barmem helper (compiled statically on the host).
# Cached under $E2E_CACHE/guest by a hash of all of its inputs; prints the
# initramfs path on stdout.
#
#   E2E_MODULES="gpio-pci-idio-16 virtio_blk virtio-rng ext4 nvme pvpanic-pci"
#                                    modules to include and load at boot
#                                    (virtio_pci itself is built into Debian's kernel)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

MODULES=${E2E_MODULES:-gpio-pci-idio-16 virtio_blk virtio-rng ext4 nvme pvpanic-pci}
MODROOT=$(readlink -f "$E2E_KDIR/modules"); MODROOT=${MODROOT%/}
KVER=$(basename "$MODROOT")
BUSYBOX=$E2E_ROOT/usr/bin/busybox
[ -x "$BUSYBOX" ] && [ -d "$MODROOT/kernel" ] || { echo "run e2e/setup-qemu.sh first" >&2; exit 1; }

OUT=$E2E_CACHE/guest
mkdir -p "$OUT"
hash=$( { echo "v1 $KVER $MODULES"; sha256sum "$BUSYBOX" "$0" "$HERE"/guest/*; } | sha256sum | cut -c1-16)
INITRD=$OUT/initramfs-$hash.cpio.gz
# Reused: touch it, so that pruning (below, by age of last use) spares it.
if [ -f "$INITRD" ]; then touch "$INITRD"; echo "$INITRD"; exit 0; fi

unpack_ko() {
    case $1 in
        *.xz) xz -dc "$1" ;;
        *.zst) zstd -dcq "$1" ;;
        *.gz) gzip -dc "$1" ;;
        *) cat "$1" ;;
    esac
}
# Private work space: several checkouts may build into the same cache at once.
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
t=$w/root    # becomes the initramfs
mkdir "$t"
find "$MODROOT/kernel" -name '*.ko*' > "$w/modlist"
modfile() {  # module name -> its file (- and _ are the same)
    local want=${1//-/_} f b
    while read -r f; do
        b=${f##*/}; b=${b%%.ko*}
        [ "${b//-/_}" = "$want" ] && { echo "$f"; return 0; }
    done < "$w/modlist"
    return 1
}
declare -A SEEN=()
ORDER=()
resolve() {  # depth first: dependencies before the module
    local m=${1//-/_} f d
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    f=$(modfile "$1") || { echo "module $1 not found in $KVER" >&2; exit 1; }
    for d in $(unpack_ko "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do resolve "$d"; done
    ORDER+=("$f")
}
for m in $MODULES; do resolve "$m"; done

mkdir -p "$t"/{bin,sbin,proc,sys,dev,tmp,e2e,lib/modules}
cp "$BUSYBOX" "$t/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -sf busybox "$t/bin/$a"; done
: > "$t/lib/modules/order"
for f in "${ORDER[@]}"; do
    b=${f##*/}; b=${b%%.ko*}.ko
    unpack_ko "$f" > "$t/lib/modules/$b"
    echo "$b" >> "$t/lib/modules/order"
done
cp "$HERE/guest/init" "$t/init"
cp "$HERE"/guest/*.sh "$t/e2e/"
chmod +x "$t/init" "$t"/e2e/*.sh
for c in barmem gpioev; do ${CC:-cc} -static -Os -o "$t/bin/$c" "$HERE/guest/$c.c"; done
(cd "$t" && find . | cpio -o -H newc --quiet) | gzip -1 > "$INITRD.tmp.$$"
mv "$INITRD.tmp.$$" "$INITRD"
# Prune images nobody used for a day. (Keeping only the newest few deleted
# images that runs from other checkouts were still booting.)
find "$OUT" -maxdepth 1 -name 'initramfs-*.cpio.gz' -mmin +1440 ! -path "$INITRD" -delete
echo "built $INITRD (modules: ${ORDER[*]##*/})" >&2
echo "$INITRD"
