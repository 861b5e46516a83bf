#!/usr/bin/env bash
# The main job, on a fresh machine: build, obtain the demo model, start the stack, stream a real
# completion. Re-running it is safe (it reuses the build, the model and a running stack).
#
# usage: scripts/quickstart.sh            start (or reuse) the stack and stream one answer
#        scripts/quickstart.sh stop       stop everything it started
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/target/release"
export LLORCH_HOME="${LLORCH_HOME:-$ROOT/.llorch/pool}"
STATE="$ROOT/.llorch"
WORKER_ID=quickstart-smollm2
log() { echo "== quickstart: $*" >&2; }

if [ "${1:-}" = stop ]; then
  [ -x "$BIN/llorch-pool" ] && "$BIN/llorch-pool" worker stop "$WORKER_ID" 2>/dev/null || true
  exit 0
fi

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (https://rustup.rs)" >&2; exit 1; }
log "building release binaries (first run: several minutes)"
cargo build --release --quiet -p llorch-candled -p pool-ctl -p llorch-ctl

log "obtaining the demo model (SmolLM2-135M-Instruct Q4_1)"
MODEL=$(scripts/fetch-test-model.sh smollm2)
"$BIN/llorch-pool" models import "$MODEL" --id smollm2-135m >/dev/null 2>&1 || true

if ! "$BIN/llorch-pool" worker list --json | grep -q "\"id\": *\"$WORKER_ID\""; then
  log "starting a worker"
  "$BIN/llorch-pool" worker spawn cpu --model smollm2-135m --id "$WORKER_ID" >&2
fi
URL=$("$BIN/llorch-pool" worker list --json | python3 -c "
import json,sys
for w in json.load(sys.stdin)['workers']:
    if w['id']=='$WORKER_ID': print(w['url'])")

log "streaming a completion from $URL"
"$BIN/llorch" infer --worker "$URL" --message "user:What is the capital of France? Answer in one sentence." \
  --max-tokens 48 --temperature 0
cat >&2 <<MSG

The worker is running at $URL (pool home: $LLORCH_HOME).
  curl -N $URL/execute -H 'content-type: application/json' -d '{"prompt":"Hello","max_tokens":16}'
  $BIN/llorch-pool worker list
Stop it with: scripts/quickstart.sh stop
MSG
