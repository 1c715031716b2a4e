# Shared by images/build-*.sh (sourced, not run). The sourcing script defines
# say() and die() first.

# installed PKG: whether the Debian package is installed.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# version_of PKG: its installed version.
version_of() { dpkg-query -W -f='${Version}' "$1"; }
# hash FILE: its sha256, for the cache keys.
hash() { sha256sum "$1" | cut -d' ' -f1; }

# apt_install PKG...: install what is missing (Debian only, as root).
apt_install() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "${OSLET_IMAGE_NO_INSTALL:-0}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing Debian package(s) ${missing[*]}; run: apt-get install -y ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; } ||
    die "apt-get install ${missing[*]} failed"
}
