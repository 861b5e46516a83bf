#!/usr/bin/env bash
# The web dashboard in a real headless browser: Debian's `chromium` (installed with apt, like
# scripts/ci-sshd.sh installs sshd) driven by Playwright for Python (from PyPI, into a venv cached
# under ~/.cache; the system browser is used, Playwright's own browsers are never downloaded)
# against a real orchestratord + llorch-candled worker (tests/python/test_dashboard.py).
# Screenshots go to target/dashboard-artifacts/. scripts/test.sh runs this.
#
# usage: scripts/test-dashboard.sh [pytest args]
#        scripts/test-dashboard.sh measure-idle [SECONDS]   orchestratord's CPU with the page
#                                                           closed, then open (default 60 s each)
# env:   LLORCH_BIN_DIR (default target/release), CI (true: a missing browser fails), PYTHON
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "== test-dashboard.sh: $*" >&2; }

PY="${PYTHON:-python3}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/llorch"
VENV="$CACHE/dashboard-venv"
PKGS=(playwright==1.65.3 pytest==9.2.0)
IN_CI=false
case "${CI:-}" in true | 1) IN_CI=true ;; esac

# Locally a missing prerequisite skips loudly (listed at the end of scripts/test.sh); under
# CI=true it fails.
skip_or_fail() {
  if $IN_CI; then
    log "FAILED: $*"
    exit 1
  fi
  log "SKIPPED: $*"
  [ -n "${LLORCH_SKIP_LOG:-}" ] && echo "dashboard browser test: $*" >>"$LLORCH_SKIP_LOG"
  exit 0
}

install_chromium() {
  command -v chromium >/dev/null && return 0
  command -v apt-get >/dev/null || return 1
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || return 1
    sudo="sudo"
  fi
  log "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; then
    $sudo apt-get update -qq
    $sudo apt-get install -y --no-install-recommends chromium >/dev/null
  fi
  command -v chromium >/dev/null
}

install_chromium || skip_or_fail "chromium is missing and cannot be installed (needs apt-get and root or sudo)"
LLORCH_CHROMIUM="$(command -v chromium)"
export LLORCH_CHROMIUM

# (freeze first: `pip freeze | grep -q` fails under pipefail when grep stops reading early)
installed=$("$VENV/bin/python" -m pip freeze 2>/dev/null || true)
if ! "$VENV/bin/python" -c "import playwright, pytest" 2>/dev/null \
  || ! grep -qx "${PKGS[0]}" <<<"$installed"; then
  log "installing ${PKGS[*]} into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$PY" -m venv "$VENV"
  # pip never downloads browsers (only `playwright install` would); the variable makes sure.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}" \
    || skip_or_fail "cannot install ${PKGS[*]} from PyPI"
fi

export LLORCH_BIN_DIR="${LLORCH_BIN_DIR:-$PWD/target/release}"
for b in orchestratord llorch-candled; do
  [ -x "$LLORCH_BIN_DIR/$b" ] || skip_or_fail "$LLORCH_BIN_DIR/$b is not built (cargo build --release --workspace --bins)"
done
LLORCH_TEST_MODEL=$(scripts/fetch-test-model.sh smollm2)
export LLORCH_TEST_MODEL
export LLORCH_DASHBOARD_ARTIFACTS="$PWD/target/dashboard-artifacts"
mkdir -p "$LLORCH_DASHBOARD_ARTIFACTS"

if [ "${1:-}" = measure-idle ]; then
  exec "$VENV/bin/python" tests/python/dashboard_idle_cpu.py "${2:-60}"
fi
log "pytest tests/python/test_dashboard.py (screenshots in $LLORCH_DASHBOARD_ARTIFACTS)"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -s tests/python/test_dashboard.py "$@"
