#!/bin/sh
# Build the oslet test kernel the way vmm/build.rs does: release profile, the
# codegen flags from ./rustflags (one flag per line; blank lines and lines
# starting with '#' skipped, surrounding blanks trimmed) joined with 0x1f into
# CARGO_ENCODED_RUSTFLAGS, RUSTFLAGS unset. Works from any directory. Extra
# arguments go to cargo (e.g. --target-dir DIR). Output:
# <target dir>/release/oslet-testkernel (default target dir: ./target).
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
sep=$(printf '\037')
flags=""
while IFS= read -r line || [ -n "$line" ]; do
    line=$(printf '%s' "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
    case $line in '' | '#'*) continue ;; esac
    if [ -z "$flags" ]; then flags=$line; else flags="$flags$sep$line"; fi
done < "$dir/rustflags"
CARGO_ENCODED_RUSTFLAGS=$flags
export CARGO_ENCODED_RUSTFLAGS
unset RUSTFLAGS
exec cargo build --release --manifest-path "$dir/Cargo.toml" "$@"
