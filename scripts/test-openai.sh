#!/usr/bin/env bash
# OpenAI compatibility: the official `openai` Python package (installed from PyPI into a venv
# under target/) against a real orchestratord and one real llorch-candled worker with SmolLM2
# (tests/python/test_openai.py starts and stops both). scripts/test.sh runs this after cargo test.
#
# usage: scripts/test-openai.sh [pytest args]
# env:   LLORCH_BIN_DIR (default target/debug, built here when it is the default), PYTHON
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "== test-openai.sh: $*" >&2; }

PY="${PYTHON:-python3}"
VENV=target/openai-venv
PKGS=(openai==3.57.0 pytest==9.2.0 jsonschema==4.26.0)

if [ -z "${LLORCH_BIN_DIR:-}" ]; then
  log "building orchestratord and llorch-candled (debug)"
  cargo build --quiet -p orchestratord -p llorch-candled
  export LLORCH_BIN_DIR="$PWD/target/debug"
fi

if ! "$VENV/bin/python" -c "import openai, pytest, jsonschema" 2>/dev/null \
  || ! "$VENV/bin/python" -m pip freeze 2>/dev/null | grep -qx "${PKGS[0]}"; then
  log "installing ${PKGS[*]} into $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PKGS[@]}"
fi

LLORCH_TEST_MODEL=$(scripts/fetch-test-model.sh smollm2)
export LLORCH_TEST_MODEL

log "pytest tests/python/test_openai.py"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/python/test_openai.py "$@"
