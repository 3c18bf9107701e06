#!/usr/bin/env bash
# Set up everything sysext needs on a Debian 12 / Ubuntu machine, and say what it installs:
#   - Debian packages: the image tools, gpg/sqv, curl, python3-venv; with --test also
#     ignition-validate, systemd-sysext/dissect/nspawn, nginx, wrk, debootstrap, PostgreSQL
#     and Ceph (mon, osd, radosgw: a real S3 engine), chromium (browser tests),
#     veritysetup and openssl (verity DDI cross-checks), qemu-system-x86, busybox-static
#     and kmod (the VM tests boot Debian's kernel)
#   - a virtualenv in .venv with this project (and its test tools with --test)
#   - with --test: systemd 254 and 262 (Debian forky) systemd-sysupdate unpacked into .cache/ (fetch-sysupdate.sh)
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

packages=(squashfs-tools erofs-utils gnupg sqv python3-venv python3-pip curl ca-certificates)
if [ "$with_tests" = 1 ]; then
  # real tools the tests and benchmarks drive: Ignition's validator, a real systemd-sysext,
  # systemd-dissect, nginx and wrk for the serving benchmark, util-linux for unshare,
  # PostgreSQL and a single-node Ceph with radosgw (S3) for the scale-out tests,
  # debootstrap: the minimal Debian root the booted tests and `sysext try` boot in nspawn,
  # Chromium for the web catalogue's browser tests (driven by Playwright, which must never
  # download a browser of its own), veritysetup and openssl to cross-check verity DDIs;
  # squashfs-tools-ng: gensquashfs writes the tests' hostile images from pack files and
  # rdsquashfs shows inodes (sysext itself packs with mksquashfs)
  packages+=(ignition systemd systemd-container nginx wrk util-linux postgresql debootstrap)
  packages+=(cryptsetup-bin openssl squashfs-tools-ng)
  # the VM tests (tests/vm.py): QEMU, a static busybox for the initramfs, depmod for the
  # kernel package the tests download with apt-get download
  packages+=(qemu-system-x86 busybox-static kmod)
  packages+=(ceph-mon ceph-osd ceph-common radosgw uuid-runtime chromium)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "==> Debian packages already installed: ${packages[*]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv .venv with $($python --version)"
  "$python" -m venv .venv
fi
extra=""
[ "$with_tests" = 1 ] && extra="[test]"
echo "==> installing sysext${extra} into .venv"
# pip's own notices about unusable index locations in a machine's pip configuration are
# that machine's business, not a problem of this install: filtered, like its progress.
pip_quiet() { grep -v "^WARNING: Location '.*' is ignored" || true; }
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 >/dev/null | pip_quiet
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 | pip_quiet
if [ "$with_tests" = 1 ]; then
  bash scripts/fetch-sysupdate.sh  # real systemd-sysupdate 254 and 262 for tests
  touch .venv/.sysext-test-installed  # scripts/test.sh --fast skips the install after this
fi
echo "==> ready: $(.venv/bin/sysext --version)"
