#!/usr/bin/env bash
# Builds oslet's default Linux OSlet image from Debian packages, reproducibly:
#
#   OUT_DIR/vmlinuz            the packaged kernel, /boot/vmlinuz-*-cloud-amd64 (newest)
#   OUT_DIR/vmlinux            its ELF, for oslet's PVH boot (extract-vmlinux.sh)
#   OUT_DIR/initramfs.cpio.gz  busybox-static, that kernel's virtio/virtio-fs/vsock
#                              modules, a static oslet-msg, and /init (images/init)
#   OUT_DIR/manifest.txt       inputs (kernel, package versions, hashes) and the
#                              sha256 of every output
#
# usage: images/build-default.sh [--force] [OUT_DIR]   (default images/out/default)
#
# A rerun whose inputs match OUT_DIR/manifest.txt (and whose outputs still have the
# hashes it records) does nothing. Two builds from the same inputs are byte-identical.
#
# Environment:
#   OSLET_IMAGE_KERNEL=/boot/vmlinuz-...  use this kernel instead of the newest cloud one
#   OSLET_IMAGE_NO_INSTALL=1              never run apt-get; fail naming the package
#   OSLET_IMAGE_TARGET_DIR=DIR            cargo target dir for the static oslet-msg
#                                         (default target/oslet-image)
# See images/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
force=0
if [ "${1:-}" = "--force" ]; then
  force=1
  shift
fi
out=${1:-$here/out/default}
[ $# -le 1 ] || { echo "usage: build-default.sh [--force] [OUT_DIR]" >&2; exit 2; }

# The modules an OSlet loads, by name; their dependencies come from modules.dep.
root_modules=(virtio_mmio virtio_console virtiofs vsock vmw_vsock_virtio_transport)
target=x86_64-unknown-linux-gnu
export LC_ALL=C
umask 022

say() { echo "build-default.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# One build at a time per OUT_DIR.
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9

# installed, version_of, hash, apt_install.
# shellcheck source=images/lib.sh
. "$here/lib.sh"

command -v dpkg-query >/dev/null || die "needs a Debian host (dpkg-query not found)"
# cpio, gzip: the archive; lz4: Debian's kernel payload (extract-vmlinux.sh);
# busybox-static: the image's userland.
apt_install cpio gzip lz4 busybox-static

# --- The kernel -----------------------------------------------------------------------
newest_kernel() { ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1; }
kimage=${OSLET_IMAGE_KERNEL:-$(newest_kernel)}
if [ -z "$kimage" ]; then
  apt_install linux-image-cloud-amd64
  kimage=$(newest_kernel)
fi
[ -r "$kimage" ] || die "kernel $kimage not found (apt-get install -y linux-image-cloud-amd64)"
kver=${kimage##*/vmlinuz-}
moddir=/lib/modules/$kver
[ -r "$moddir/modules.dep" ] || die "$moddir/modules.dep not found: the modules of kernel $kver are not installed"
kpkg=$(dpkg-query -S "$kimage" 2>/dev/null | awk -F: 'NR == 1 { print $1 }') ||
  die "no Debian package owns $kimage"
[ -n "$kpkg" ] || die "no Debian package owns $kimage"

busybox=$(dpkg-query -L busybox-static | awk '/\/s?bin\/busybox$/ && !f { print; f = 1 }')
[ -x "$busybox" ] || die "busybox-static installs no busybox binary"

# --- oslet-msg, static ------------------------------------------------------------------
# A static-pie binary (glibc, crt-static) needs no loader or shared libraries in the
# image and does not depend on where the host keeps them. --target is explicit so
# that crt-static applies to oslet-msg only, not to proc macros or build scripts.
# The path prefixes are remapped so the binary does not depend on the checkout path.
tdir=${OSLET_IMAGE_TARGET_DIR:-$repo/target/oslet-image}
say "building oslet-msg (static) in $tdir"
(
  cd "$repo"
  unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET
  export CARGO_TARGET_DIR=$tdir
  flags=(-C target-feature=+crt-static "--remap-path-prefix=$repo=oslet"
    "--remap-path-prefix=${CARGO_HOME:-${HOME:-/root}/.cargo}=cargo")
  IFS=$'\x1f'
  export CARGO_ENCODED_RUSTFLAGS="${flags[*]}"
  unset IFS
  export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
  "${CARGO:-cargo}" build --release -p oslet-msg --target "$target" >&2
) || die "cargo build of oslet-msg failed"
msg=$tdir/$target/release/oslet-msg
[ -x "$msg" ] || die "no $msg after the build"

# --- Modules: the closure of root_modules in modules.dep, dependencies first ------------
declare -A path_of=() deps_of=() seen=()
while IFS= read -r line; do
  key=${line%%:*}
  base=${key##*/}
  path_of[${base%%.ko*}]=$key
  deps_of[$key]=${line#*:}
done <"$moddir/modules.dep"

order=()
visit() {
  local p=$1 d
  [ -n "${seen[$p]:-}" ] && return 0
  seen[$p]=1
  for d in ${deps_of[$p]:-}; do visit "$d"; done
  order+=("$p")
}
for m in "${root_modules[@]}"; do
  if [ -z "${path_of[$m]:-}" ]; then
    grep -qE "/$m\.ko" "$moddir/modules.builtin" 2>/dev/null &&
      { say "module $m is built into $kver: nothing to load"; continue; }
    die "module $m is not in $moddir/modules.dep"
  fi
  visit "${path_of[$m]}"
done
plain() { local p=$1; p=${p%.xz}; p=${p%.zst}; p=${p%.gz}; echo "$p"; }

# --- Inputs: what the outputs are made of ------------------------------------------------
inputs=$(
  echo "kernel-version $kver"
  echo "kernel-image $kimage"
  echo "package $kpkg $(version_of "$kpkg")"
  for p in busybox-static cpio gzip; do echo "package $p $(version_of "$p")"; done
  echo "sha256 init $(hash "$here/init")"
  echo "sha256 oslet-msg $(hash "$msg")"
  echo "sha256 build-default.sh $(hash "$here/build-default.sh")"
  echo "sha256 lib.sh $(hash "$here/lib.sh")"
  echo "sha256 extract-vmlinux.sh $(hash "$here/extract-vmlinux.sh")"
  for p in "${order[@]}"; do echo "module $(plain "$p")"; done
)

outputs=(vmlinuz vmlinux initramfs.cpio.gz)
if [ "$force" = 0 ] && [ -r "$out/manifest.txt" ] &&
  [ "$(sed -n '/^\[inputs\]$/,/^\[outputs\]$/p' "$out/manifest.txt" | sed '1d;$d')" = "$inputs" ] &&
  (cd "$out" && sed -n '/^\[outputs\]$/,$p' manifest.txt | sed 1d | sha256sum --quiet -c >/dev/null 2>&1); then
  say "up to date: $out (kernel $kver)"
  exit 0
fi

# --- Build -------------------------------------------------------------------------------
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "building $out (kernel $kver)"

cp "$kimage" "$work/vmlinuz"
"$here/extract-vmlinux.sh" "$kimage" "$work/vmlinux" >&2

rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,dev,etc/oslet,proc,sys,tmp,root,shared,var/log,usr/bin,"lib/modules/$kver"}
ln -s bin "$rootfs/sbin"
ln -s ../bin "$rootfs/usr/sbin"
install -m 0755 "$here/init" "$rootfs/init"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
# Every applet as a symlink: the console shell is the OSlet's user interface.
"$busybox" --list | while IFS= read -r a; do
  [ "$a" = busybox ] || [ -e "$rootfs/bin/$a" ] || ln -s busybox "$rootfs/bin/$a"
done
install -m 0755 "$msg" "$rootfs/bin/oslet-msg"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"

# Modules as plain .ko (busybox insmod cannot read .xz/.zst), their load order for
# /init, and a modules.dep of the same files (for busybox modprobe in the shell).
for p in "${order[@]}"; do
  case "$p" in
    *.ko.xz) apt_install xz-utils ;;
    *.ko.zst) apt_install zstd ;;
  esac
done
for p in "${order[@]}"; do
  dst=$rootfs/lib/modules/$kver/$(plain "$p")
  mkdir -p "$(dirname "$dst")"
  case "$p" in
    *.ko.xz) xz -dc "$moddir/$p" >"$dst" ;;
    *.ko.zst) zstd -qdc "$moddir/$p" >"$dst" ;;
    *.ko.gz) gzip -dc "$moddir/$p" >"$dst" ;;
    *.ko) cp "$moddir/$p" "$dst" ;;
    *) die "module $p: unknown format" ;;
  esac
  chmod 0644 "$dst"
  plain "$p" >>"$rootfs/etc/oslet/modules"
  printf '%s:' "$(plain "$p")" >>"$rootfs/lib/modules/$kver/modules.dep"
  for d in ${deps_of[$p]}; do printf ' %s' "$(plain "$d")" >>"$rootfs/lib/modules/$kver/modules.dep"; done
  echo >>"$rootfs/lib/modules/$kver/modules.dep"
done

# Reproducible archive: sorted names, mtime 0, owner root, inode and device numbers
# not taken from this build (--reproducible), no name or time in the gzip header.
find "$rootfs" -exec touch -h -d @0 {} +
(
  cd "$rootfs"
  find . -mindepth 1 -printf '%P\0' | sort -z |
    cpio -o -0 -H newc -R 0:0 --reproducible --quiet
) | gzip -n -9 >"$work/initramfs.cpio.gz"
chmod 0644 "$work/vmlinuz" "$work/vmlinux" "$work/initramfs.cpio.gz"

for f in "${outputs[@]}"; do mv -f "$work/$f" "$out/$f"; done
{
  echo "# oslet default Linux OSlet image, written by images/build-default.sh"
  echo "[inputs]"
  echo "$inputs"
  echo "[outputs]"
  (cd "$out" && sha256sum "${outputs[@]}")
} >"$work/manifest.txt"
mv -f "$work/manifest.txt" "$out/manifest.txt"
say "wrote $out: ${outputs[*]} manifest.txt"
