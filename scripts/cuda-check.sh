#!/usr/bin/env bash
# CUDA compiles without a GPU: installs a pinned CUDA compiler from PyPI (NVIDIA's own wheels;
# no driver, no GPU needed to compile) and runs
#   cargo check --release -p llorch-candled --features cuda --all-targets
# in a CUDA-only target directory. Both are cached under ~/.cache/llorch:
#   cuda-toolkit/<hash of the pins>        the wheels, installed with pip --target (~350 MB)
#   cuda-target/<hash of the pins>         the CUDA target dir (~700 MB), reused across Cargo.lock changes
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

# Pinned CUDA toolkit wheels (PyPI). nvcc 13.x needs the crt headers, cicc (nvidia-nvvm), the
# runtime headers and CCCL (cub/thrust/libcu++) next to it; the wheels share one nvidia/cu13 tree.
PINS=(
  nvidia-cuda-nvcc==13.4.92
  nvidia-cuda-crt==13.4.92
  nvidia-nvvm==13.4.92
  nvidia-cuda-runtime==13.4.92
  nvidia-cuda-cccl==13.3.5.0.6
)
# cudarc checks the toolkit version it finds against the ones it knows; the pinned 13.4 is the
# newest it supports (13.5 is rejected: "Unsupported cuda toolkit version").
export CUDARC_CUDA_VERSION=13040
# No GPU to ask: compile the kernels for Ampere (sm_80), the oldest arch candle's kernels need.
export CUDA_COMPUTE_CAP=80

cache="${LLORCH_CACHE_DIR:-$HOME/.cache/llorch}"
pins_key=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)
toolkit_root="$cache/cuda-toolkit/$pins_key"
cuda_home="$toolkit_root/nvidia/cu13"

if [ ! -x "$cuda_home/bin/nvcc" ]; then
  command -v python3 >/dev/null || { log "python3 not found (needed to install the CUDA wheels)"; exit 1; }
  log "installing the CUDA compiler (${PINS[*]}) into $toolkit_root"
  tmp="$toolkit_root.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$toolkit_root")"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tmp" "${PINS[@]}"
  [ -x "$tmp/nvidia/cu13/bin/nvcc" ] || { log "the wheels installed no nvidia/cu13/bin/nvcc"; exit 1; }
  rm -rf "$toolkit_root"
  mv "$tmp" "$toolkit_root"
  # Older pin sets are not needed any more.
  find "$cache/cuda-toolkit" -mindepth 1 -maxdepth 1 ! -name "$pins_key" -exec rm -rf {} +
else
  log "CUDA compiler cached at $toolkit_root"
fi

export PATH="$cuda_home/bin:$cuda_home/nvvm/bin:$PATH"
export CUDA_PATH="$cuda_home" CUDA_ROOT="$cuda_home" CUDA_HOME="$cuda_home" CUDA_TOOLKIT_ROOT_DIR="$cuda_home"
export CPATH="$cuda_home/include:$cuda_home/include/cccl${CPATH:+:$CPATH}"
log "$(nvcc --version | tail -n 2 | head -n 1)"

# One CUDA target dir per toolkit, kept across Cargo.lock changes: cargo rebuilds only what a
# change touches (candle-kernels' PTX, most of the cold cost, only when candle changes).
export CARGO_TARGET_DIR="$cache/cuda-target/$pins_key"
mkdir -p "$CARGO_TARGET_DIR"
find "$cache/cuda-target" -mindepth 1 -maxdepth 1 ! -name "$pins_key" -exec rm -rf {} +

# `-p` is right here (unlike for cargo test): this target dir holds only the CUDA build, so the
# feature resolution of the rest of the workspace does not matter.
log "cargo check --release -p llorch-candled --features cuda --all-targets (target dir $CARGO_TARGET_DIR)"
t0=$(date +%s)
cargo check --release -p llorch-candled --features cuda --all-targets --quiet
log "CUDA build checks: ok ($(($(date +%s) - t0)) s)"
