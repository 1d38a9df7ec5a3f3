#!/usr/bin/env bash
# Install what is needed (into .venv) and run the demo. Extra arguments go to `histomil demo`.
set -euo pipefail
source "$(dirname "$0")/_env.sh" ""
histomil demo "$@"
