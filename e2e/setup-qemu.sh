#!/usr/bin/env bash
# e2e/setup-qemu.sh - what the end-to-end tests need, installed idempotently
# outside the repository: `muser vm setup`'s own script (vm/setup.sh: a QEMU
# with vfio-user-pci, busybox and a Debian guest kernel, from Debian
# packages) into $E2E_CACHE, plus the host tools only the tests use (cpio
# and gzip for build-guest.sh, zstd, e2fsprogs to check the virtio-blk
# images). `muser vm` finds the same cache with MUSER_VM_CACHE=$E2E_CACHE,
# so nothing is downloaded twice.
#
# Environment:
#   E2E_CACHE=/var/cache/muser-e2e   where everything goes
#   E2E_MIRROR=URL                   Debian mirror (default: the host's)
#   E2E_SUITE=trixie                 base suite; packages come from $E2E_SUITE-backports
#   E2E_FORCE=1                      start from scratch
# Needs root for apt-get on a fresh machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

need=()
for tool in cpio:cpio zstd:zstd gzip:gzip e2fsck:e2fsprogs debugfs:e2fsprogs; do
    t=${tool%%:*}   # e2fsck and debugfs live in sbin, which a user's PATH may lack
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "[e2e-setup] apt-get install on the host: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }
fi

MUSER_VM_CACHE=${E2E_CACHE:-/var/cache/muser-e2e} \
MUSER_VM_MIRROR=${E2E_MIRROR:-} MUSER_VM_SUITE=${E2E_SUITE:-trixie} MUSER_VM_FORCE=${E2E_FORCE:-} \
    bash "$HERE/../vm/setup.sh"
