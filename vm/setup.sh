#!/usr/bin/env bash
# vm/setup.sh - `muser vm setup`: prepares, idempotently, what `muser vm`
# needs to boot a guest, in a cache folder outside any project:
#
#   qemu     a QEMU with the vfio-user-pci client (10.1.1 or later). One on
#            PATH that qualifies is used as it is; otherwise Debian's
#            qemu-system-x86 from $SUITE-backports is unpacked into $C/root.
#   busybox  busybox-static, the guest's userland ($C/root/usr/bin/busybox).
#   kernel   the kernel linux-image-amd64 points at in $SUITE-backports,
#            with its modules ($C/kernel/vmlinuz, $C/kernel/modules).
#
# How: the host's own apt-get, pointed by options at a private state
# directory and at $SUITE + $SUITE-backports, resolves and downloads the
# packages (and their libraries) without installing anything on the host;
# each .deb is then unpacked (dpkg-deb -x, no maintainer scripts) into $C.
# That QEMU runs through the unpacked tree's own dynamic loader, in the
# host's namespace: no chroot, no mounts (see src/cli/vm/qemu.ts).
#
# Environment:
#   MUSER_VM_CACHE=DIR     where everything goes (muser vm passes its cache)
#   MUSER_VM_MIRROR=URL    Debian mirror (default: the host's apt sources)
#   MUSER_VM_SUITE=trixie  base suite; packages come from $SUITE-backports
#   MUSER_VM_FORCE=1       start from scratch
# Needs a Debian-family host (apt-get, dpkg-deb). Host tools it lacks (xz,
# dpkg, the Debian archive keyring) are installed with apt-get, as root.
set -euo pipefail

C=${MUSER_VM_CACHE:?MUSER_VM_CACHE must name the cache folder}
SUITE=${MUSER_VM_SUITE:-trixie}
BACKPORTS=$SUITE-backports
ROOT=$C/root
KDIR=$C/kernel
A=$C/apt
STAMP=$C/.setup-ok
MIN_QEMU=10.1.1
t0=$SECONDS
say() { echo "[muser vm setup +$((SECONDS - t0))s] $*"; }
die() { echo "muser vm setup: $*" >&2; exit 1; }

command -v apt-get >/dev/null || die "this installs from Debian packages and needs apt-get; on this host install QEMU $MIN_QEMU or later yourself, and boot your own kernel with muser vm --kernel"

# --- host tools; checked even when the rest is installed, so that a tool
# added later reaches machines set up before it
need=()
for tool in xz:xz-utils dpkg-deb:dpkg; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing host packages: ${need[*]} (run: sudo apt-get install ${need[*]})"
    say "host tools: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
else
    say "host tools: xz, dpkg-deb and the Debian keyring are there"
fi

if [ -n "${MUSER_VM_FORCE:-}" ]; then rm -rf "$ROOT" "$KDIR" "$A" "$STAMP"; fi
mkdir -p "$C"

# Runs the unpacked QEMU through its own loader (as muser vm does).
cache_qemu() {
    local lib=$ROOT/usr/lib/x86_64-linux-gnu ld
    ld=$lib/ld-linux-x86-64.so.2
    [ -e "$ld" ] || ld=$ROOT/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    QEMU_MODULE_DIR=$lib/qemu "$ld" --library-path "$lib:$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib" \
        --argv0 qemu-system-x86_64 "$ROOT/usr/bin/qemu-system-x86_64" \
        -L "$ROOT/usr/share/qemu" -L "$ROOT/usr/share/seabios" "$@"
}
# "QEMU emulator version 11.1.3 (...)" -> 0 when >= MIN_QEMU
version_ok() {
    local v
    v=$(sed -n 's/^QEMU emulator version \([0-9][0-9.]*\).*/\1/p' <<<"$1" | head -n1)
    [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$MIN_QEMU" "$v" | sort -V | head -n1)" = "$MIN_QEMU" ]
}
good_qemu() {  # the command in "$@" is a QEMU that has vfio-user-pci
    local ver
    ver=$("$@" --version 2>/dev/null | head -n1) || return 1
    version_ok "$ver" && "$@" -device help 2>/dev/null | grep -q '"vfio-user-pci"' && echo "$ver"
}

# --- 1. QEMU
pkgs=()
qemu_note=
if path_qemu=$(command -v qemu-system-x86_64) && ver=$(good_qemu "$path_qemu"); then
    qemu_note="$ver at $path_qemu"
    say "qemu: using $qemu_note (on PATH)"
elif [ -x "$ROOT/usr/bin/qemu-system-x86_64" ] && ver=$(good_qemu cache_qemu); then
    qemu_note="$ver in $ROOT"
    say "qemu: $qemu_note (already there)"
else
    if [ -n "${path_qemu:-}" ]; then
        say "qemu: $("$path_qemu" --version 2>/dev/null | head -n1) at $path_qemu lacks vfio-user-pci (needs $MIN_QEMU or later): fetching Debian's"
    fi
    pkgs+=(qemu-system-x86)
fi
# --- 2. busybox
if [ -x "$ROOT/usr/bin/busybox" ]; then say "busybox: $ROOT/usr/bin/busybox (already there)"; else pkgs+=(busybox-static); fi
# --- 3. kernel
if [ -e "$KDIR/vmlinuz" ] && [ -d "$KDIR/modules/kernel" ]; then
    say "kernel: $(basename "$(readlink -f "$KDIR/modules")") in $KDIR (already there)"
    want_kernel=
else
    want_kernel=1
fi

if [ ${#pkgs[@]} -gt 0 ] || [ -n "$want_kernel" ]; then
    # --- mirror: the host's Debian archive
    MIRROR=${MUSER_VM_MIRROR:-}
    if [ -z "$MIRROR" ]; then
        MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
        MIRROR=${MIRROR%/}
        [ -n "$MIRROR" ] || die "no Debian archive URI in the host's apt sources: set MUSER_VM_MIRROR (e.g. http://deb.debian.org/debian)"
    fi
    # --- a private apt: own lists, own (empty) dpkg status, own download cache
    mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/etc/preferences.d" "$A/etc/sources.list.d" "$A/kernel"
    printf 'deb %s %s main\ndeb %s %s main\n' "$MIRROR" "$SUITE" "$MIRROR" "$BACKPORTS" > "$A/etc/sources.list"
    : > "$A/status"
    APT=(apt-get -q
         -o Dir::Etc::SourceList="$A/etc/sources.list" -o Dir::Etc::SourceParts="$A/etc/sources.list.d"
         -o Dir::Etc::Preferences="$A/etc/preferences" -o Dir::Etc::PreferencesParts="$A/etc/preferences.d"
         -o Dir::State::Lists="$A/lists" -o Dir::State::Status="$A/status"
         -o Dir::Cache="$A" -o Dir::Cache::Archives="$A/archives"
         -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
         -o Acquire::Check-Valid-Until=false -o Acquire::Languages=none
         -o APT::Install-Recommends=false -o APT::Install-Suggests=false
         -o APT::Architecture=amd64 -o APT::Architectures::=amd64
         -o Debug::NoLocking=true -o APT::Sandbox::User="$(id -un)"
         -o Dir::Etc::Trusted=/usr/share/keyrings/debian-archive-keyring.gpg)
    APTC=(apt-cache "${APT[@]:1}")
    say "apt: reading $SUITE and $BACKPORTS from $MIRROR (private lists in $A)"
    "${APT[@]}" update >/dev/null

    if [ ${#pkgs[@]} -gt 0 ]; then
        say "downloading ${pkgs[*]} (from $BACKPORTS) with their libraries"
        rm -f "$A"/archives/*.deb
        "${APT[@]}" -y -t "$BACKPORTS" --download-only install "${pkgs[@]}" >/dev/null
        ndeb=$(ls "$A"/archives/*.deb | wc -l)
        say "unpacking $ndeb packages into $ROOT"
        rm -rf "$ROOT.tmp"; mkdir -p "$ROOT.tmp"
        # keep what is already there (busybox, or QEMU), replace the rest
        [ -d "$ROOT" ] && cp -a "$ROOT/." "$ROOT.tmp/"
        for f in "$A"/archives/*.deb; do dpkg-deb -x "$f" "$ROOT.tmp"; done
        rm -rf "$ROOT"; mv "$ROOT.tmp" "$ROOT"
        rm -f "$A"/archives/*.deb
        if [[ " ${pkgs[*]} " == *" qemu-system-x86 "* ]]; then
            ver=$(good_qemu cache_qemu) || die "the QEMU unpacked into $ROOT does not run, or has no vfio-user-pci: $(cache_qemu --version 2>&1 | head -n2)"
            qemu_note="$ver in $ROOT"
            say "qemu: $qemu_note"
        fi
        [ -x "$ROOT/usr/bin/busybox" ] && say "busybox: $ROOT/usr/bin/busybox"
    fi

    if [ -n "$want_kernel" ]; then
        meta=$("${APTC[@]}" -t "$BACKPORTS" depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
        [ -n "$meta" ] || die "cannot resolve linux-image-amd64 in $BACKPORTS"
        kpkgs=("$meta")
        # newer Debian kernels split the image into linux-binary-* and linux-modules-*
        for d in $("${APTC[@]}" -t "$BACKPORTS" depends "$meta" | sed -n 's/^ *Depends: \(linux-\(binary\|modules\)-[^ ]*\)$/\1/p'); do kpkgs+=("$d"); done
        say "kernel: downloading ${kpkgs[*]}"
        rm -f "$A"/kernel/*.deb
        (cd "$A/kernel" && "${APT[@]}" download -t "$BACKPORTS" "${kpkgs[@]}" >/dev/null)
        rm -rf "$KDIR"; mkdir -p "$KDIR/pkg"
        for f in "$A"/kernel/*.deb; do dpkg-deb -x "$f" "$KDIR/pkg"; done
        vml=$(ls "$KDIR"/pkg/boot/vmlinuz-* "$KDIR"/pkg/usr/lib/modules/*/vmlinuz "$KDIR"/pkg/lib/modules/*/vmlinuz 2>/dev/null | head -n1 || true)
        mods=$(ls -d "$KDIR"/pkg/usr/lib/modules/*/ "$KDIR"/pkg/lib/modules/*/ 2>/dev/null | head -n1 || true)
        [ -n "$vml" ] && [ -n "$mods" ] || die "the kernel package's layout is not understood (no vmlinuz or modules in $KDIR/pkg)"
        ln -sfn "${mods#"$KDIR"/}" "$KDIR/modules"
        ln -sfn "${vml#"$KDIR"/}" "$KDIR/vmlinuz"
        rm -f "$A"/kernel/*.deb
        say "kernel: $(basename "${mods%/}") in $KDIR"
    fi
fi

stamp="${qemu_note:-QEMU ?}; kernel $(basename "$(readlink -f "$KDIR/modules")")"
[ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ] || echo "$stamp" > "$STAMP"   # a complete cache stays untouched
say "ready: $(cat "$STAMP"); $(du -sh "$C" | cut -f1) in $C"
