#!/usr/bin/env bash
# GPU check, prepared for a CUDA host (NOT RUN yet: no session so far had a GPU).
#
# Builds llorch-candled and llorch-pool with `--features cuda`, runs the Gemma 3 engine tests and
# the generic-path checks (tests/it/generic_path.rs: parity, batching vs solo, chunked prefill,
# prompt cache, cancel; on the CPU they pass bit for bit, on a GPU watch batching vs solo) on the
# GPU, then the model matrix (scripts/test_all_models.sh) on the cpu and cuda backends; the matrix
# includes the llama.cpp parity fixture over HTTP. Writes target/model-report-cuda.json; merge it
# into MODEL_SUPPORT.md with
#   python3 scripts/model_support_md.py target/model-report.json target/model-report-cuda.json > MODEL_SUPPORT.md
#
# Needs: nvidia-smi and nvcc (CUDA toolkit; candle compiles its kernels with it), Rust, python3,
# and either network access (crates.io, PyPI for the test models) or both prepared in advance:
# a cargo vendor directory named by CARGO_VENDOR_DIR, and the GGUF files in LLORCH_MODEL_CACHE
# (see scripts/fetch-test-model.sh for names and sha256).
#
# usage: scripts/gpu-check.sh [--gpu N]       (default GPU 0; CUDA_COMPUTE_CAP is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."

GPU=0
[ "${1:-}" = "--gpu" ] && GPU="$2"
OUT="${OUT:-target}"
mkdir -p "$OUT"
log() { echo "== gpu-check: $*" >&2; }

command -v nvidia-smi >/dev/null || { log "nvidia-smi not found: no NVIDIA driver on this host"; exit 1; }
command -v nvcc >/dev/null || { log "nvcc not found: install the CUDA toolkit (candle builds its kernels with it)"; exit 1; }
nvidia-smi --query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv | tee "$OUT/gpu-info.csv" >&2
nvcc --version | tail -1 >&2
if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP=$(nvidia-smi -i "$GPU" --query-gpu=compute_cap --format=csv,noheader | tr -d '.')
  export CUDA_COMPUTE_CAP
fi

if [ -n "${CARGO_VENDOR_DIR:-}" ]; then
  # Every cargo call below (test_all_models.sh's too) builds from the vendored sources.
  log "offline build from $CARGO_VENDOR_DIR"
  CARGO_HOME=$(mktemp -d)
  export CARGO_HOME
  printf '[net]\noffline = true\n[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "%s"\n' \
    "$(cd "$CARGO_VENDOR_DIR" && pwd)" > "$CARGO_HOME/config.toml"
fi

log "building with --features cuda (compute capability $CUDA_COMPUTE_CAP)"
t0=$(date +%s)
cargo build --release -p pool-ctl -p llorch-candled --features llorch-candled/cuda 2>&1 | tail -5 >&2
log "build took $(( $(date +%s) - t0 )) s"

log "models"
scripts/fetch-test-model.sh all >/dev/null

log "engine tests on cuda:$GPU (Gemma 3, and the generic-path checks: parity, batching, chunks, prompt cache, cancel)"
status=0
LLORCH_TEST_DEVICE="cuda:$GPU" CI=true cargo test --release -p llorch-engine --features cuda \
  --test it -- --test-threads=1 gemma3:: generic_path:: 2>&1 | tee "$OUT/gpu-engine-test.log" | tail -20 >&2 || status=1

log "model matrix on cpu and cuda"
LLORCH_FEATURES=llorch-candled/cuda CUDA_VISIBLE_DEVICES="$GPU" scripts/test_all_models.sh --bin-dir target/release --backends cpu,cuda \
  --report "$OUT/model-report-cuda.json" || status=1

log "done (status $status): $OUT/model-report-cuda.json, $OUT/gpu-engine-test.log"
exit "$status"
