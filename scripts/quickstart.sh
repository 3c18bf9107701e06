#!/usr/bin/env bash
# The main job on embedded defaults, from a fresh Debian 12 / Ubuntu machine:
#   1. set up (Debian packages + .venv, see scripts/setup.sh)
#   2. build the shellcheck extension from its PyPI wheel (a real upstream, fetched with pip)
#   3. start a local registry (SQLite + files under ./sysext-data, signing key made on first start)
#   4. publish the image, then read it back the way systemd-sysupdate would (signature + hashes)
#   5. keep serving on http://127.0.0.1:${PORT:-8080} until Ctrl-C
# QUICKSTART_EXIT=1 stops after step 4 (for scripted runs).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${PORT:-8080}
registry="http://127.0.0.1:${port}"
data=${SYSEXT_DATA:-./sysext-data}

bash scripts/setup.sh
sysext=.venv/bin/sysext

echo "==> building the shellcheck extension (recipes/shellcheck.toml)"
"$sysext" build shellcheck --output out

mkdir -p "$data"
token_file="$data/admin-token"
if [ ! -s "$token_file" ]; then
  (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' >"$token_file")
fi
export SYSEXT_ADMIN_TOKEN
SYSEXT_ADMIN_TOKEN=$(cat "$token_file")

echo "==> starting the registry on $registry (data in $data, admin token in $token_file)"
"$sysext" serve --data "$data" --host 127.0.0.1 --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS "$registry/keyring.gpg" -o /dev/null 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "the registry did not start" >&2; exit 1; }
  sleep 0.2
done

echo "==> publishing"
SYSEXT_TOKEN=$SYSEXT_ADMIN_TOKEN "$sysext" publish out/shellcheck-*.raw --registry "$registry"

echo "==> what a host running systemd-sysupdate would see"
keyring=$(mktemp)
curl -fsS "$registry/keyring.gpg" -o "$keyring"
"$sysext" check "$registry/extensions/shellcheck" --keyring "$keyring"
rm -f "$keyring"

cat <<MSG

Done. The registry serves:
  $registry/                                   web catalogue
  $registry/extensions/shellcheck/SHA256SUMS   signed manifest (+ .gpg)
  $registry/extensions/shellcheck/shellcheck.conf   transfer file for /etc/sysupdate.shellcheck.d/
  $registry/keyring.gpg                        key for /etc/systemd/import-pubring.gpg
A first-boot config for a Flatcar host:
  $sysext butane shellcheck --registry $registry
MSG

if [ "${QUICKSTART_EXIT:-0}" = 1 ]; then
  exit 0
fi
echo "Serving until Ctrl-C."
wait "$server"
