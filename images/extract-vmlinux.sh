#!/usr/bin/env bash
# Extracts the uncompressed ELF vmlinux from a bzImage (gzip, xz, zstd, lz4, lzma,
# bzip2 payloads), like the kernel's scripts/extract-vmlinux. oslet boots the ELF
# through its PVH entry; on hosts whose KVM emulates ring-0 code (see KVM-NOTES)
# the bzImage's in-guest decompressor would take hours, the ELF boots in seconds.
#
# usage: extract-vmlinux.sh BZIMAGE OUTPUT
set -euo pipefail
in=${1:?usage: extract-vmlinux.sh BZIMAGE OUTPUT}
out=${2:?usage: extract-vmlinux.sh BZIMAGE OUTPUT}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

is_elf() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = "7f454c46" ]; }

try() {
  # $1: magic as printf escapes, $2: decompressor command
  local magic=$1 cmd=$2 pos
  for pos in $(LC_ALL=C grep -obUaP "$magic" "$in" | cut -d: -f1); do
    tail -c+$((pos + 1)) "$in" | $cmd > "$tmp" 2>/dev/null || true
    if [ -s "$tmp" ] && is_elf "$tmp"; then
      cp "$tmp" "$out"
      return 0
    fi
  done
  return 1
}

try '\x02\x21\x4c\x18' 'lz4 -dc' ||
try '\x1f\x8b\x08' 'gunzip -c' ||
try '\xfd\x37\x7a\x58\x5a\x00' 'unxz -c' ||
try '\x28\xb5\x2f\xfd' 'zstd -dc' ||
try '\x5d\x00\x00\x00' 'unlzma -c' ||
try 'BZh' 'bunzip2 -c' || { echo "extract-vmlinux.sh: no known compressed ELF payload in $in" >&2; exit 1; }
echo "extract-vmlinux.sh: wrote $out"
