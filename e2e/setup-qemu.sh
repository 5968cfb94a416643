#!/usr/bin/env bash
# e2e/setup-qemu.sh - install, idempotently and outside the repository, what
# the end-to-end tests need: a QEMU that has the vfio-user-pci client
# (>= 10.1.1; Debian bookworm ships 7.2, trixie-backports 11.x), busybox, and
# a Debian guest kernel, all from Debian packages.
#
# How: the host's own apt-get, pointed by options at a private state
# directory and at trixie + trixie-backports, resolves and downloads the
# packages (and their libraries) without installing anything on the host;
# each .deb is then unpacked (dpkg-deb -x, no maintainer scripts) into
# $E2E_CACHE/root. QEMU runs from there through that tree's own dynamic
# loader (see e2e/lib.sh), in the host's namespace: no chroot, no mounts.
#
# Environment:
#   E2E_CACHE=/var/cache/muser-e2e   where everything goes
#   E2E_MIRROR=URL                   Debian mirror (default: the host's)
#   E2E_SUITE=trixie                 base suite; packages come from $E2E_SUITE-backports
#   E2E_FORCE=1                      start from scratch
# Needs root for apt-get on a fresh machine (host tools: cpio, xz, zstd,
# e2fsprogs for checking the virtio-blk images).
set -euo pipefail

C=${E2E_CACHE:-/var/cache/muser-e2e}
SUITE=${E2E_SUITE:-trixie}
BACKPORTS=$SUITE-backports
ROOT=$C/root
KDIR=$C/kernel
A=$C/apt
STAMP=$C/.setup-ok
t0=$SECONDS
say() { echo "[e2e-setup +$((SECONDS - t0))s] $*"; }

# --- host tools (a fresh bookworm CI machine may lack some); checked even
# when the rest is installed, so a new tool reaches machines set up before it
need=()
for tool in cpio:cpio xz:xz-utils zstd:zstd gzip:gzip dpkg-deb:dpkg e2fsck:e2fsprogs debugfs:e2fsprogs; do
    t=${tool%%:*}   # e2fsck and debugfs live in sbin, which a user's PATH may lack
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || need+=("${tool#*:}")
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
    say "apt-get install on the host: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" \
        || { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }
fi

if [ -n "${E2E_FORCE:-}" ]; then rm -rf "$ROOT" "$KDIR" "$A" "$STAMP"; fi
if [ -f "$STAMP" ] && [ -x "$ROOT/usr/bin/qemu-system-x86_64" ] && [ -e "$KDIR/vmlinuz" ]; then
    say "already installed in $C ($(cat "$STAMP"))"
    exit 0
fi
mkdir -p "$C"

# --- mirror: the host's Debian archive
if [ -z "${E2E_MIRROR:-}" ]; then
    E2E_MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
    E2E_MIRROR=${E2E_MIRROR%/}
    [ -n "$E2E_MIRROR" ] || { echo "no Debian archive URI in the host's apt sources: set E2E_MIRROR" >&2; exit 1; }
fi
say "mirror $E2E_MIRROR, suites $SUITE + $BACKPORTS, cache $C"

# --- a private apt: own lists, own (empty) dpkg status, own download cache
mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/etc/preferences.d" "$A/etc/sources.list.d" "$A/kernel"
printf 'deb %s %s main\ndeb %s %s main\n' "$E2E_MIRROR" "$SUITE" "$E2E_MIRROR" "$BACKPORTS" > "$A/etc/sources.list"
: > "$A/status"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
APT=(apt-get -q
     -o Dir::Etc::SourceList="$A/etc/sources.list" -o Dir::Etc::SourceParts="$A/etc/sources.list.d"
     -o Dir::Etc::Preferences="$A/etc/preferences" -o Dir::Etc::PreferencesParts="$A/etc/preferences.d"
     -o Dir::State::Lists="$A/lists" -o Dir::State::Status="$A/status"
     -o Dir::Cache="$A" -o Dir::Cache::Archives="$A/archives"
     -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
     -o Acquire::Check-Valid-Until=false -o Acquire::Languages=none
     -o APT::Install-Recommends=false -o APT::Install-Suggests=false
     -o APT::Architecture=amd64 -o APT::Architectures::=amd64
     -o Debug::NoLocking=true -o APT::Sandbox::User=root -o Dir::Etc::Trusted="$KEYRING")
APTC=(apt-cache "${APT[@]:1}")

say "apt-get update (private lists)"
"${APT[@]}" update >/dev/null

# --- QEMU (+ its libraries and firmware) and busybox: download only
say "downloading qemu-system-x86 (from $BACKPORTS) and busybox-static"
"${APT[@]}" -y -t "$BACKPORTS" --download-only install qemu-system-x86 busybox-static >/dev/null
ndeb=$(ls "$A"/archives/*.deb | wc -l)
say "unpacking $ndeb packages into $ROOT"
rm -rf "$ROOT.tmp"; mkdir -p "$ROOT.tmp"
for f in "$A"/archives/*.deb; do dpkg-deb -x "$f" "$ROOT.tmp"; done
rm -rf "$ROOT"; mv "$ROOT.tmp" "$ROOT"

# --- the guest kernel: the package linux-image-amd64 points at, unpacked
meta=$("${APTC[@]}" -t "$BACKPORTS" depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
[ -n "$meta" ] || { echo "cannot resolve linux-image-amd64" >&2; exit 1; }
kpkgs=("$meta")
# newer Debian kernels may split the image into linux-binary-* and linux-modules-*
for d in $("${APTC[@]}" -t "$BACKPORTS" depends "$meta" | sed -n 's/^ *Depends: \(linux-\(binary\|modules\)-[^ ]*\)$/\1/p'); do kpkgs+=("$d"); done
say "downloading guest kernel ${kpkgs[*]}"
rm -f "$A"/kernel/*.deb
(cd "$A/kernel" && "${APT[@]}" download -t "$BACKPORTS" "${kpkgs[@]}" >/dev/null)
rm -rf "$KDIR"; mkdir -p "$KDIR/pkg"
for f in "$A"/kernel/*.deb; do dpkg-deb -x "$f" "$KDIR/pkg"; done
vml=$(ls "$KDIR"/pkg/boot/vmlinuz-* "$KDIR"/pkg/usr/lib/modules/*/vmlinuz "$KDIR"/pkg/lib/modules/*/vmlinuz 2>/dev/null | head -n1 || true)
mods=$(ls -d "$KDIR"/pkg/usr/lib/modules/*/ "$KDIR"/pkg/lib/modules/*/ 2>/dev/null | head -n1 || true)
[ -n "$vml" ] && [ -n "$mods" ] || { echo "kernel package layout not understood" >&2; exit 1; }
ln -sfn "${mods#"$KDIR"/}" "$KDIR/modules"
ln -sfn "${vml#"$KDIR"/}" "$KDIR/vmlinuz"
rm -rf "$A"/archives/*.deb "$A"/kernel/*.deb

# --- check: the QEMU runs and has the vfio-user-pci device
. "$(dirname "$0")/lib.sh"
ver=$(qemu_run --version | head -n1)
qemu_run -device help 2>/dev/null | grep -q '"vfio-user-pci"' || { echo "ERROR: $ver has no vfio-user-pci" >&2; exit 1; }
echo "$ver; kernel $(basename "${mods%/}")" > "$STAMP"
say "done: $(cat "$STAMP"); $(du -sh "$C" | cut -f1) in $C"
