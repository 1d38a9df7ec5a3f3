# Sourced by scripts/*.sh: create (or reuse) .venv and install histomil with the given extras.
# Re-installs only when pyproject.toml or the extras change (a stamp file records them).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
venv="${HISTOMIL_VENV:-$root/.venv}"
extras="${1:-}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[histomil] creating virtual environment in $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.histomil-install-stamp"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) extras=$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[histomil] installing histomil${extras:+[$extras]} into $venv (first run takes a few minutes)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e ".${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
