#!/usr/bin/env bash
# Fetch real systemd-sysupdate clients for the end-to-end tests (tests/test_real_sysupdate.py).
#
#   scripts/fetch-sysupdate.sh            both clients
#   scripts/fetch-sysupdate.sh 254|262    one of them
#
# 254: Debian 12 does not package systemd-sysupdate, but bookworm-backports' systemd 254
# ships /lib/systemd/systemd-sysupdate, and its systemd-container ships the matching
# /lib/systemd/systemd-pull that sysupdate runs by that absolute path.
# 262: Debian forky's systemd (262 when this was written; forky moves on, so any 26x is
# accepted and the tests read the version it reports) ships /usr/lib/systemd/systemd-sysupdate;
# it runs on Debian 12's glibc 2.36 (it needs GLIBC_2.34 at most, and dlopen()s libcurl,
# libcrypto… which bookworm has), so no forky root is needed.
#
# This script downloads those .debs (plus libsystemd-shared) with a PRIVATE apt
# configuration — the machine's own apt sources are never changed — and unpacks them into
# .cache/sysupdate-VERSION/ in the repo. Nothing is installed on the system; the tests run
# the binaries from there.
#
# Safe to run again: it does nothing when an unpacked client already answers --version.
# Fails loudly (non-zero exit, one line saying why) when it cannot fetch or unpack.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
  bash "$0" 254
  exec bash "$0" 262
fi
case "$1" in
  254) suite=bookworm-backports bindir=lib/systemd want="systemd 25" ;;
  262) suite=forky bindir=usr/lib/systemd want="systemd 26" ;;
  *) echo "fetch-sysupdate: error: unknown client '$1' (254 or 262)" >&2; exit 2 ;;
esac
dest=.cache/sysupdate-$1
apt_dir=.cache/sysupdate-apt-$1
packages=(systemd libsystemd-shared systemd-container)

die() {
  echo "fetch-sysupdate: error: $*" >&2
  exit 1
}

client_version() {
  # libsystemd-shared-NNN.so lives in usr/lib/<multiarch>/systemd inside the package
  local shared
  shared=$(find "$1/usr/lib" -name 'libsystemd-shared-*.so' -print -quit 2>/dev/null)
  [ -n "$shared" ] || return 1
  LD_LIBRARY_PATH=$(dirname "$shared") "$1/$bindir/systemd-sysupdate" --version 2>/dev/null | head -n1
}

if [ -x "$dest/$bindir/systemd-sysupdate" ] && [ -x "$dest/$bindir/systemd-pull" ]; then
  version=$(client_version "$dest" || true)
  if [[ "$version" == "$want"* ]]; then
    echo "==> real systemd-sysupdate already in $dest ($version)"
    exit 0
  fi
fi

command -v apt-get >/dev/null || die "apt-get not found (this needs a Debian 12 machine)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

# The Debian mirror this machine already uses: the first URIs:/deb line whose suite is the
# plain release (not -security or -updates). Read, never written down anywhere.
mirror=""
signed_by=""
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  # deb822 stanzas: pick the one whose Suites: holds "bookworm" itself.
  found=$(awk '
    /^[[:space:]]*$/ { if (uri != "" && ok) { print uri " " key; exit } uri=""; key=""; ok=0; next }
    tolower($1) == "uris:" { uri=$2 }
    tolower($1) == "signed-by:" { key=$2 }
    tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") ok=1 }
    END { if (uri != "" && ok) print uri " " key }
  ' "$f" | head -n1)
  if [ -n "$found" ]; then
    mirror=${found%% *}
    signed_by=${found#* }
    [ "$signed_by" = "$found" ] && signed_by=""
    break
  fi
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  # one-line format: deb [options] URI bookworm main…
  mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { if ($(i+1) == "bookworm") { print $i; exit } break } }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || die "no 'bookworm' Debian source found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"

arch=$(dpkg --print-architecture)
echo "==> fetching systemd-sysupdate ($suite, $arch) from the Debian mirror in this machine's apt sources"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
options="arch=$arch"
[ -n "$signed_by" ] && [ -f "$signed_by" ] && options+=" signed-by=$signed_by"
echo "deb [$options] $mirror $suite main" >"$apt_dir/sources.list"

apt_opts=(
  -o "Dir::Etc::SourceList=$PWD/$apt_dir/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$PWD/$apt_dir/lists"
  -o "Dir::Cache=$PWD/$apt_dir/cache"
  -o "APT::Architecture=$arch"
  # running as root (CI): skip apt's _apt download sandbox warning in our private dirs
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update || die "apt-get update of $suite failed"
specs=()
for p in "${packages[@]}"; do specs+=("$p/$suite"); done
(cd "$apt_dir/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download "${specs[@]}") \
  || die "apt-get download ${specs[*]} failed"

tmp="$dest.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
for deb in "$apt_dir"/debs/*.deb; do
  echo "    unpacking $(basename "$deb")"
  dpkg-deb -x "$deb" "$tmp" || die "dpkg-deb -x $deb failed"
done
[ -x "$tmp/$bindir/systemd-sysupdate" ] || die "the $suite systemd package has no $bindir/systemd-sysupdate"
[ -x "$tmp/$bindir/systemd-pull" ] || die "the $suite systemd-container package has no $bindir/systemd-pull"
version=$(client_version "$tmp" || true)
[[ "$version" == "$want"* ]] || die "the unpacked systemd-sysupdate does not run or is not ${want}x (--version said: '$version')"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "==> real systemd-sysupdate ready in $dest ($version)"
