#!/usr/bin/env bash
# Install what the tests need (into .venv) and run lint, format check and the test suite.
# Extra arguments go to pytest. Exit code is honest: lint errors, failures and "no tests" fail.
set -euo pipefail
source "$(dirname "$0")/_env.sh" "test,ray"
# The HTML report test renders in headless Chromium; install it when we can (root + apt).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[histomil] installing chromium for the report rendering test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "[histomil] chromium could not be installed; the browser test will be skipped"
fi
ruff check src tests benchmarks
ruff format --check src tests benchmarks
python -m pytest "$@"
