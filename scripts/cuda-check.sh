#!/usr/bin/env bash
# CUDA compiles without a GPU: installs a pinned CUDA compiler from PyPI (NVIDIA's own wheels;
# no driver, no GPU needed to compile) and runs
#   cargo check --release -p llorch-candled --features cuda --all-targets
# in a CUDA-only target directory. Both are cached under ~/.cache/llorch (scripts/lib/cuda-env.sh,
# shared with scripts/gpu-check.sh):
#   cuda-toolkit/<hash of the pins>        the wheels, installed with pip --target (~350 MB)
#   cuda-target/<hash of the pins>         the CUDA target dir (~700 MB), reused across Cargo.lock changes
# LLORCH_CUDA_SYSTEM=1 uses the nvcc on PATH instead (its own dir, cuda-target/system-<hash>).
# A cold run costs ~17 min on 2 idle cores (candle-kernels compiles its PTX one file at a time);
# a warm run seconds.
#
# Locally LLORCH_SKIP_CUDA_CHECK=1 skips it (the reason is printed and recorded in the skip log);
# under CI=true it never skips and any failure fails.
#
# usage: scripts/cuda-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "== cuda-check: $*" >&2; }

if [ -n "${LLORCH_SKIP_CUDA_CHECK:-}" ]; then
  if [ "${CI:-}" = true ]; then
    log "LLORCH_SKIP_CUDA_CHECK is set but CI=true: the CUDA check never skips in CI"
  else
    reason="cuda-check.sh: CUDA build check skipped (LLORCH_SKIP_CUDA_CHECK=1)"
    log "$reason"
    [ -z "${LLORCH_SKIP_LOG:-}" ] || echo "$reason" >>"$LLORCH_SKIP_LOG"
    exit 0
  fi
fi

# The pinned toolkit (or, with LLORCH_CUDA_SYSTEM=1, the nvcc on PATH) and the CUDA target dir,
# shared with scripts/gpu-check.sh.
. scripts/lib/cuda-env.sh
cuda_env_setup
# A compile check needs no GPU: the kernels are compiled for Ampere (sm_80), the oldest arch
# candle's kernels need, unless CUDA_COMPUTE_CAP says otherwise.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
# One CUDA target dir per toolkit, kept across Cargo.lock changes: cargo rebuilds only what a
# change touches (candle-kernels' PTX, most of the cold cost, only when candle changes).
cuda_env_target_dir

# `-p` is right here (unlike for cargo test): this target dir holds only the CUDA build, so the
# feature resolution of the rest of the workspace does not matter.
log "cargo check --release -p llorch-candled --features cuda --all-targets (target dir $CARGO_TARGET_DIR)"
t0=$(date +%s)
cargo check --release -p llorch-candled --features cuda --all-targets --quiet
log "CUDA build checks: ok ($(($(date +%s) - t0)) s)"
