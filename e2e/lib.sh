# e2e/lib.sh - shared by the e2e scripts (sourced, not run).
# Where setup-qemu.sh (vm/setup.sh) installed things, and how to run that QEMU.

E2E_CACHE=${E2E_CACHE:-/var/cache/muser-e2e}
E2E_ROOT=$E2E_CACHE/root
E2E_KDIR=$E2E_CACHE/kernel
E2E_LIBDIR=$E2E_ROOT/usr/lib/x86_64-linux-gnu

# Runs the unpacked QEMU with the unpacked tree's own loader and libraries,
# so it lives in the host's namespace (socket paths and memfds as usual).
# vm/setup.sh unpacks none when the host's PATH already has a good QEMU.
qemu_run() {
    if [ ! -x "$E2E_ROOT/usr/bin/qemu-system-x86_64" ]; then qemu-system-x86_64 "$@"; return; fi
    local ld=$E2E_LIBDIR/ld-linux-x86-64.so.2
    [ -e "$ld" ] || ld=$E2E_ROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    QEMU_MODULE_DIR=$E2E_LIBDIR/qemu "$ld" \
        --library-path "$E2E_LIBDIR:$E2E_ROOT/lib/x86_64-linux-gnu:$E2E_ROOT/usr/lib" \
        --argv0 qemu-system-x86_64 "$E2E_ROOT/usr/bin/qemu-system-x86_64" \
        -L "$E2E_ROOT/usr/share/qemu" -L "$E2E_ROOT/usr/share/seabios" "$@"
}
