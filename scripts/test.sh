#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite (ruff and mypy included).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k manifest -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "==> running the test suite"
exec .venv/bin/python -m pytest "$@"
