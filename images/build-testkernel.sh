#!/usr/bin/env bash
# Builds oslet's Linux test kernel: a small kernel for hosts whose KVM emulates guest
# ring 0 (no hardware virtualization; ../shared/KVM-NOTES.md), from Debian's
# linux-source-6.1 with oslet's config and the two patches that KVM needs:
#
#   OUT_DIR/vmlinux          the kernel, an ELF with a PVH entry (oslet boots it as is)
#   OUT_DIR/initramfs.cpio   an uncompressed newc cpio: /init (images/linux-test/init.c,
#                            static, no libc) and /dev/console
#   OUT_DIR/config           the kernel's whole .config
#   OUT_DIR/manifest.txt     inputs (package and tool versions, hashes) and the sha256
#                            of every output
#
# usage: images/build-testkernel.sh [--force] [OUT_DIR]   (default images/out/testkernel)
#
# The steps: unpack /usr/src/linux-source-6.1.tar.xz, apply
# images/linux-test/patches/*.patch (each says why it exists), `make tinyconfig`,
# merge images/linux-test/oslet.config over it, check that every option it names came
# out as asked, `make vmlinux`, build /init, pack the initramfs with the kernel's
# own usr/gen_init_cpio. The patches are for this kernel only; build-default.sh never
# sees them.
#
# Cache: the outputs are kept in CACHE/<key>/, where <key> hashes the inputs (the
# linux-source-6.1 version and its tarball's md5 from dpkg, gcc and ld versions, this
# script and lib.sh, the config fragment, the patches, init.c). A run whose key is in the cache
# only copies the outputs into OUT_DIR (or does nothing when OUT_DIR already holds
# them). CACHE is outside the checkout so that it survives a fresh clone (as in CI):
#   ${OSLET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/oslet}/testkernel
# The kernel tree (about 1.5 GB) is unpacked in CACHE/build.<key>/ and removed after a
# successful build, unless OSLET_TESTKERNEL_KEEP_TREE=1.
#
# Environment:
#   OSLET_CACHE_DIR=DIR            see Cache above
#   OSLET_IMAGE_NO_INSTALL=1       never run apt-get; fail naming the packages
#   OSLET_TESTKERNEL_KEEP_TREE=1   keep the built kernel tree
#   OSLET_TESTKERNEL_JOBS=N        make -jN (default: nproc)
# See images/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
force=0
if [ "${1:-}" = "--force" ]; then
  force=1
  shift
fi
out=${1:-$here/out/testkernel}
[ $# -le 1 ] || { echo "usage: build-testkernel.sh [--force] [OUT_DIR]" >&2; exit 2; }

tarball=/usr/src/linux-source-6.1.tar.xz
srcpkg=linux-source-6.1
lt=$here/linux-test
fragment=$lt/oslet.config
cache=${OSLET_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/oslet}/testkernel
jobs=${OSLET_TESTKERNEL_JOBS:-$(nproc)}
export LC_ALL=C
umask 022

say() { echo "build-testkernel.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# installed, version_of, hash, apt_install.
# shellcheck source=images/lib.sh
. "$here/lib.sh"

command -v dpkg-query >/dev/null || die "needs a Debian host (dpkg-query not found)"
# The source; a compiler and make; flex, bison: kconfig; bc, perl: generated headers
# (timeconst.h and others); libelf-dev: objtool; xz-utils: the tarball; patch: the
# patches. Each is looked for as the file it provides, then installed if missing.
need=()
[ -r "$tarball" ] || need+=("$srcpkg")
for tool in gcc make flex bison bc perl patch; do command -v "$tool" >/dev/null || need+=("$tool"); done
command -v xz >/dev/null || need+=(xz-utils)
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
[ -r "$tarball" ] || die "$tarball not found although $srcpkg is installed"

shopt -s nullglob
patches=("$lt"/patches/*.patch)
shopt -u nullglob
[ ${#patches[@]} -gt 0 ] || die "no patches in $lt/patches"

# --- Inputs: what the outputs are made of ------------------------------------------------
tar_md5=$(awk -v f="${tarball#/}" '$2 == f { print $1 }' "/var/lib/dpkg/info/$srcpkg.md5sums" 2>/dev/null || true)
[ -n "$tar_md5" ] || tar_md5=$(md5sum "$tarball" | cut -d' ' -f1)
# The build's date, user and host are fixed (reproducible): the date is the tarball's
# (the package's), so one source version always gives the same banner.
build_ts=$(date -u -r "$tarball" '+%a %b %e %H:%M:%S UTC %Y')
inputs=$(
  echo "package $srcpkg $(version_of "$srcpkg")"
  echo "md5 $(basename "$tarball") $tar_md5"
  echo "tool $(gcc --version | head -n 1)"
  echo "tool $(ld --version | head -n 1)"
  echo "kbuild timestamp $build_ts user oslet host oslet version 1"
  echo "sha256 build-testkernel.sh $(hash "$here/build-testkernel.sh")"
  echo "sha256 lib.sh $(hash "$here/lib.sh")"
  echo "sha256 oslet.config $(hash "$fragment")"
  echo "sha256 init.c $(hash "$lt/init.c")"
  for p in "${patches[@]}"; do echo "sha256 patches/$(basename "$p") $(hash "$p")"; done
)
key=$(printf '%s\n' "$inputs" | sha256sum | cut -c1-16)
outputs=(vmlinux initramfs.cpio config)

# fresh DIR: DIR/manifest.txt has these inputs and DIR's outputs have its hashes.
fresh() {
  [ -r "$1/manifest.txt" ] &&
    [ "$(sed -n '/^\[inputs\]$/,/^\[outputs\]$/p' "$1/manifest.txt" | sed '1d;$d')" = "$inputs" ] &&
    (cd "$1" && sed -n '/^\[outputs\]$/,$p' manifest.txt | sed 1d | sha256sum --quiet -c >/dev/null 2>&1)
}

# publish: copy the cached outputs into OUT_DIR, the manifest last.
publish() {
  mkdir -p "$out"
  local f
  for f in "${outputs[@]}"; do cp -f "$cache/$key/$f" "$out/.$f.tmp" && mv -f "$out/.$f.tmp" "$out/$f"; done
  cp -f "$cache/$key/manifest.txt" "$out/.manifest.tmp" && mv -f "$out/.manifest.tmp" "$out/manifest.txt"
}

if [ "$force" = 0 ] && fresh "$out"; then
  say "up to date: $out (key $key)"
  exit 0
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
# One build at a time per cache (parallel test runs wait for the first one's kernel).
exec 9>"$cache/.lock"
flock 9

if [ "$force" = 0 ] && fresh "$cache/$key"; then
  publish
  say "up to date: $out (from the cache, $cache/$key)"
  exit 0
fi

# --- Build -------------------------------------------------------------------------------
t0=$(date +%s)
tree=$cache/build.$key
# Under the lock no other build runs: any tree or stage left here is from a build
# that failed or was stopped (or a kept tree of other inputs).
rm -rf "$cache"/build.* "$cache"/.stage.* "$cache/$key"
mkdir -p "$tree"
say "building the test kernel (key $key) in $tree; log: $tree/build.log"
tar -xf "$tarball" -C "$tree"
src=$tree/linux-source-6.1
[ -f "$src/Makefile" ] || die "$tarball has no linux-source-6.1/Makefile"
t_unpack=$(date +%s)
for p in "${patches[@]}"; do
  say "applying $(basename "$p")"
  patch -d "$src" -p1 --forward --batch --quiet <"$p" >&2 || die "patch $(basename "$p") does not apply"
done

log=$tree/build.log
kmake() {
  make -C "$src" -j"$jobs" KBUILD_BUILD_TIMESTAMP="$build_ts" KBUILD_BUILD_USER=oslet \
    KBUILD_BUILD_HOST=oslet KBUILD_BUILD_VERSION=1 LOCALVERSION= "$@" >>"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; die "make $* failed (whole log: $log)"; }
}
kmake tinyconfig
(cd "$src" && ./scripts/kconfig/merge_config.sh -m .config "$fragment") >>"$log" 2>&1 ||
  { tail -n 20 "$log" >&2; die "merge_config.sh failed"; }
kmake olddefconfig

# Every option the fragment sets must come out set; every one it unsets, unset.
# (Unset options whose dependencies are gone simply vanish from .config, which is fine.)
bad=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*)
      grep -qxF "$line" "$src/.config" || bad+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$src/.config" || echo absent))")
      ;;
    "# CONFIG_"*" is not set")
      opt=${line#\# }
      opt=${opt%% *}
      ! grep -qE "^$opt=" "$src/.config" || bad+=("$line (got: $(grep -E "^$opt=" "$src/.config"))")
      ;;
  esac
done <"$fragment"
[ ${#bad[@]} -eq 0 ] || die "$(printf 'the kernel config does not have: %s\n' "${bad[@]}")"

say "make -j$jobs vmlinux"
kmake vmlinux
t_kernel=$(date +%s)

# /init: static, no libc, no build id (reproducible).
gcc -static -nostdlib -ffreestanding -fno-stack-protector -fno-asynchronous-unwind-tables \
  -fno-pie -no-pie -O2 -s -Wall -Wextra -Werror -Wl,--build-id=none \
  -o "$tree/init" "$lt/init.c" >&2 || die "gcc failed on init.c"
# The initramfs, uncompressed (the kernel has no decompressors, and inflating in
# emulated ring 0 would be slow): the kernel's own gen_init_cpio, mtime 0, owner root.
gcc -O2 -o "$tree/gen_init_cpio" "$src/usr/gen_init_cpio.c" >&2 || die "gcc failed on gen_init_cpio.c"
printf '%s\n' 'dir /dev 0755 0 0' 'nod /dev/console 0600 0 0 c 5 1' \
  "file /init $tree/init 0755 0 0" >"$tree/initramfs.list"
"$tree/gen_init_cpio" -t 0 "$tree/initramfs.list" >"$tree/initramfs.cpio" || die "gen_init_cpio failed"

release=$(cat "$src/include/config/kernel.release" 2>/dev/null || echo unknown)
stage=$cache/.stage.$key
rm -rf "$stage"
mkdir -p "$stage"
cp "$src/vmlinux" "$stage/vmlinux"
cp "$tree/initramfs.cpio" "$stage/initramfs.cpio"
cp "$src/.config" "$stage/config"
touch -d @0 "$stage/vmlinux" "$stage/initramfs.cpio" "$stage/config"
chmod 0644 "$stage/vmlinux" "$stage/initramfs.cpio" "$stage/config"
{
  echo "# oslet Linux test kernel, written by images/build-testkernel.sh (key $key)"
  echo "[inputs]"
  echo "$inputs"
  echo "[outputs]"
  (cd "$stage" && sha256sum "${outputs[@]}")
} >"$stage/manifest.txt"
mv "$stage" "$cache/$key"
[ "${OSLET_TESTKERNEL_KEEP_TREE:-0}" = 1 ] || rm -rf "$tree"
publish
t_end=$(date +%s)
say "built Linux $release in $((t_end - t0)) s (unpack $((t_unpack - t0)) s, config and kernel $((t_kernel - t_unpack)) s)"
say "wrote $out: ${outputs[*]} manifest.txt"
