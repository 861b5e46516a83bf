#!/usr/bin/env bash
# Benchmarks (release builds): the speed budgets that do not belong in tests. Prints tokens/s and
# latencies; exits 1 when a budget of this machine kind is missed on a quiet machine.
#
#   1. the model matrix with --budgets bench (load time, prompt and generation tok/s per model;
#      MODEL_SUPPORT.md regenerated with --markdown)
#   2. llorch-bench on SmolLM2: pp128/tg128 and continuous batching 1,2,4,8, and the worker
#      process (cold start, TTFT, cancel latency)
#   3. with --peer PATH-TO-llama-bench: scripts/bench-peer.py, llorch-bench and llama.cpp's
#      llama-bench interleaved on SmolLM2 Q4_1 and Gemma 3 Q4_K_M (pp512, tg64), with ratios, and
#      scripts/bench-serve.py, 8 concurrent streams against the llama-server next to it; with
#      --markdown their table goes into MODEL_SUPPORT.md (JSON in target/bench/)
#
# Compare with llama.cpp only in the same run (see ../shared/reference/perf-baseline.md):
# on a shared machine a ratio to a number from another day means nothing.
#
# usage: scripts/bench.sh [--markdown] [--rounds N] [--peer PATH-TO-llama-bench] [--fleet] [--tenancy]
#        [--only-extra]   (--fleet/--tenancy without 1-3)
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "== bench.sh: $*" >&2; }
MD=()
ROUNDS=3
PEER=
FLEET=
TENANCY=
ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --markdown) MD=(--markdown); shift ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --peer) PEER="$2"; shift 2 ;;
    --fleet) FLEET=1; shift ;;
    --tenancy) TENANCY=1; shift ;;
    --only-extra) ONLY=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

status=0
extras() {
  if [ -n "$TENANCY" ]; then
    log "tenancy-bench (10,000 tenants and keys, 10,000 queued)"
    cargo build --release --quiet --workspace --bins
    target/release/tenancy-bench || status=1
  fi
  if [ -n "$FLEET" ]; then
    log "fleet benchmarks (real llorch-pool, sshd on loopback, SmolLM2)"
    scripts/ci-sshd.sh install >&2 || true
    scripts/fetch-test-model.sh smollm2 >/dev/null
    cargo test --release --workspace --quiet bench_fleet -- --ignored --nocapture --test-threads=1 \
      2>&1 | grep -E '^fleet|test result|panicked|FAILED' || status=1
  fi
}
if [ -n "$ONLY" ]; then
  extras
  exit "$status"
fi
log "model matrix with the bench budgets"
scripts/test_all_models.sh --bin-dir target/release --budgets bench --report target/model-report-bench.json \
  "${MD[@]}" || status=1

log "llorch-bench (SmolLM2 Q4_1, 2 threads)"
cargo build --release --quiet -p llorch-candled --bin llorch-bench --bin llorch-candled
SMOL=$(scripts/fetch-test-model.sh smollm2)
target/release/llorch-bench --model "$SMOL" --threads 2 --rounds "$ROUNDS" --batch 1,2,4,8 --worker || status=1

if [ -n "$PEER" ]; then
  mkdir -p target/bench
  PEERS=()
  # SmolLM2 requantized to the formats people download (its 576-wide rows are not a multiple of
  # 256, so llama-quantize falls back to Q5_0/Q8_0 for most matrices, as it does for such models)
  requant=~/.cache/llorch/models/requant
  mkdir -p "$requant"
  for t in Q4_K_M Q6_K; do
    f="$requant/SmolLM2-135M-Instruct.$t-from-Q4_1.gguf"
    [ -s "$f" ] || "$(dirname "$PEER")/llama-quantize" --allow-requantize "$SMOL" "$f" "$t" 2 >/dev/null \
      || { log "llama-quantize $t failed"; status=1; }
  done
  for m in $(scripts/fetch-test-model.sh all) "$requant"/*.gguf; do
    log "same-run ratios to llama.cpp: $(basename "$m")"
    out="target/bench/peer-$(basename "$m" .gguf).json"
    scripts/bench-peer.py --peer "$PEER" --model "$m" --threads 2 --rounds "$ROUNDS" --json > "$out" \
      && PEERS+=(--peer "$out") || status=1
  done
  log "8 concurrent streams: worker vs llama-server -np 8 (SmolLM2)"
  out=target/bench/serve-8.json
  scripts/bench-serve.py --server "$(dirname "$PEER")/llama-server" --model "$SMOL" --streams 8 \
    --rounds "$ROUNDS" --json > "$out" && PEERS+=(--peer "$out") || status=1
  if [ ${#MD[@]} -gt 0 ] && [ ${#PEERS[@]} -gt 0 ]; then
    log "MODEL_SUPPORT.md with the same-run table"
    scripts/model_support_md.py target/model-report-bench.json "${PEERS[@]}" > MODEL_SUPPORT.md
  fi
fi
extras
exit "$status"
