#!/usr/bin/env bash
# e2e/run.sh [SCENARIO...] - the end-to-end tests (`npm run test:e2e`):
# a real QEMU (vfio-user-pci) boots a real Linux guest under TCG against
# muser sample devices, and the guest's own drivers drive them.
#
#   1. e2e/setup-qemu.sh    installs QEMU + guest kernel (vm/setup.sh, as `muser vm setup`;
#                           idempotent, outside the repo)
#   2. e2e/build-guest.sh   builds the busybox initramfs (cached)
#   3. e2e/scenario.mjs     one run per scenario: device + QEMU + assertions
#
# Scenarios (default: all): gpio, gpio-unshared, bench; virtio-blk,
# virtio-blk-mq, virtio-blk-workers (2 queues on worker threads), virtio-rng, nvme, nvme-workers, nvme-mmap-doorbells, isolate (muser devices; skipped while the samples do not
# exist), virtio-blk-nbd (virtio-blk on an nbdkit export, killed and
# restarted mid-I/O), pvpanic (a device written in Python) and qemu-virtio-blk, qemu-virtio-blk-mq, qemu-virtio-rng (the same
# checks against QEMU's built-in devices: the guest side's reference), and vm
# (`muser vm`: its interactive shell, a panic, QEMU killed, SIGINT).
# Environment: E2E_CACHE (default /var/cache/muser-e2e), E2E_LOGS (default
# /tmp/muser-e2e-logs), E2E_NO_BUILD=1 (skip `tsc`), E2E_BOOT_TIMEOUT (s).
set -euo pipefail
cd "$(dirname "$0")/.."
export E2E_CACHE=${E2E_CACHE:-/var/cache/muser-e2e}
export E2E_LOGS=${E2E_LOGS:-/tmp/muser-e2e-logs}
t0=$SECONDS

if [ -z "${E2E_NO_BUILD:-}" ]; then
    echo "[e2e] building (tsc)"
    npx --no-install tsc -p tsconfig.json
fi
[ -f dist/src/cli/main.js ] || { echo "[e2e] dist/ missing: run npm run build" >&2; exit 1; }

bash e2e/setup-qemu.sh
INITRD=$(bash e2e/build-guest.sh)
# A private copy: the cache is shared with other checkouts, whose runs may prune it.
export E2E_INITRD
E2E_INITRD=$(mktemp --suffix=.cpio.gz)
cp "$INITRD" "$E2E_INITRD"
echo "[e2e] setup done after $((SECONDS - t0)) s; initramfs $INITRD"

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(gpio gpio-unshared bench virtio-blk virtio-blk-mq virtio-blk-workers virtio-rng nvme nvme-workers nvme-mmap-doorbells virtio-blk-nbd pvpanic qemu-virtio-blk qemu-virtio-blk-mq qemu-virtio-rng vm isolate)
failed=()
npass=0; nfail=0; nskip=0
out=$(mktemp)
trap 'rm -f "$out" "$E2E_INITRD"' EXIT
for s in "${scenarios[@]}"; do
    ok=1
    node e2e/scenario.mjs "$s" | tee "$out" || { ok=0; failed+=("$s"); }
    p=$(grep -c '^PASS ' "$out" || true); f=$(grep -c '^FAIL ' "$out" || true); k=$(grep -c '^SKIP ' "$out" || true)
    [ $ok = 0 ] && [ "$f" = 0 ] && f=1      # a scenario that died before asserting
    npass=$((npass + p)); nfail=$((nfail + f)); nskip=$((nskip + k))
done

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "[e2e] PASS: ${#scenarios[@]} scenarios (${scenarios[*]}) in $((SECONDS - t0)) s"
else
    echo "[e2e] FAIL: ${failed[*]} (of ${scenarios[*]}) after $((SECONDS - t0)) s; logs in $E2E_LOGS"
fi
echo "e2e: $npass passed, $nfail failed, $nskip skipped"
[ ${#failed[@]} -eq 0 ]
