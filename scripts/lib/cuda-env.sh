# CUDA toolkit and build environment shared by scripts/cuda-check.sh and scripts/gpu-check.sh
# (sourced, not run).
#
#   cuda_env_setup      choose the CUDA compiler and export what candle/cudarc need:
#                       - default: the pinned toolkit from PyPI (CUDA_PINS below), installed once
#                         into ~/.cache/llorch/cuda-toolkit/<pins key>, with CUDARC_CUDA_VERSION
#                         set to the pinned version (cudarc rejects newer toolkits);
#                       - LLORCH_CUDA_SYSTEM=1: the nvcc already on PATH (a GPU host's own
#                         toolkit; CUDARC_CUDA_VERSION is left as the caller set it).
#                       Exports PATH, CUDA_PATH, CUDA_ROOT, CUDA_HOME, CUDA_TOOLKIT_ROOT_DIR,
#                       CPATH, CUDA_ENV_KIND (pinned|system) and CUDA_PINS_KEY.
#   cuda_env_target_dir export CARGO_TARGET_DIR=~/.cache/llorch/cuda-target/<key> (one per
#                       toolkit, kept across Cargo.lock changes; older keys of the same kind are
#                       pruned), so the cold candle-kernels PTX build (~17 min on 2 cores) is paid
#                       once per machine and shared by both scripts.
#   cuda_env_gpu_cap N  print GPU N's compute capability from nvidia-smi (e.g. 89 for 8.9);
#                       fails when nvidia-smi cannot say.
#   cuda_env_describe   print what cuda_env_setup would choose, changing nothing (--dry-run).
#
# Needs `log` defined by the caller (one line to stderr).

# Pinned CUDA toolkit wheels (PyPI, NVIDIA's own). nvcc 13.x needs the crt headers, cicc
# (nvidia-nvvm), the runtime headers and CCCL (cub/thrust/libcu++) next to it; the wheels share
# one nvidia/cu13 tree. No driver and no GPU are needed to compile.
CUDA_PINS=(
  nvidia-cuda-nvcc==13.4.92
  nvidia-cuda-crt==13.4.92
  nvidia-nvvm==13.4.92
  nvidia-cuda-runtime==13.4.92
  nvidia-cuda-cccl==13.3.5.0.6
)
# cudarc checks the toolkit version it finds against the ones it knows; the pinned 13.4 is the
# newest it supports (13.5 is rejected: "Unsupported cuda toolkit version").
CUDA_PINNED_CUDARC_VERSION=13040

CUDA_CACHE="${LLORCH_CACHE_DIR:-$HOME/.cache/llorch}"
CUDA_PINS_KEY=$(printf '%s\n' "${CUDA_PINS[@]}" | sha256sum | cut -c1-12)
CUDA_TOOLKIT_ROOT="$CUDA_CACHE/cuda-toolkit/$CUDA_PINS_KEY"
CUDA_PINNED_HOME="$CUDA_TOOLKIT_ROOT/nvidia/cu13"

cuda_env_describe() {
  if [ "${LLORCH_CUDA_SYSTEM:-}" = 1 ]; then
    echo "system CUDA toolkit: $(command -v nvcc || echo 'nvcc not on PATH')"
  else
    local state="to be installed"
    [ -x "$CUDA_PINNED_HOME/bin/nvcc" ] && state="cached"
    echo "pinned CUDA toolkit (${CUDA_PINS[*]}) at $CUDA_TOOLKIT_ROOT ($state), CUDARC_CUDA_VERSION=$CUDA_PINNED_CUDARC_VERSION"
  fi
}

# Install the pinned wheels unless cached.
_cuda_env_install() {
  if [ -x "$CUDA_PINNED_HOME/bin/nvcc" ]; then
    log "CUDA compiler cached at $CUDA_TOOLKIT_ROOT"
    return 0
  fi
  command -v python3 >/dev/null || { log "python3 not found (needed to install the CUDA wheels)"; return 1; }
  log "installing the CUDA compiler (${CUDA_PINS[*]}) into $CUDA_TOOLKIT_ROOT"
  local tmp="$CUDA_TOOLKIT_ROOT.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$CUDA_TOOLKIT_ROOT")"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tmp" "${CUDA_PINS[@]}" || return 1
  [ -x "$tmp/nvidia/cu13/bin/nvcc" ] || { log "the wheels installed no nvidia/cu13/bin/nvcc"; return 1; }
  rm -rf "$CUDA_TOOLKIT_ROOT"
  mv "$tmp" "$CUDA_TOOLKIT_ROOT"
  # Older pin sets are not needed any more.
  find "$CUDA_CACHE/cuda-toolkit" -mindepth 1 -maxdepth 1 ! -name "$CUDA_PINS_KEY" -exec rm -rf {} +
}

cuda_env_setup() {
  local home
  if [ "${LLORCH_CUDA_SYSTEM:-}" = 1 ]; then
    command -v nvcc >/dev/null || { log "LLORCH_CUDA_SYSTEM=1 but no nvcc on PATH"; return 1; }
    home=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)
    CUDA_ENV_KIND=system
    # a different toolkit needs its own target dir (the PTX differs)
    CUDA_PINS_KEY="system-$(nvcc --version | tail -n 2 | sha256sum | cut -c1-8)"
  else
    _cuda_env_install || return 1
    home=$CUDA_PINNED_HOME
    CUDA_ENV_KIND=pinned
    export CUDARC_CUDA_VERSION=$CUDA_PINNED_CUDARC_VERSION
    export PATH="$home/bin:$home/nvvm/bin:$PATH"
    export CPATH="$home/include:$home/include/cccl${CPATH:+:$CPATH}"
  fi
  export CUDA_PATH="$home" CUDA_ROOT="$home" CUDA_HOME="$home" CUDA_TOOLKIT_ROOT_DIR="$home"
  export CUDA_ENV_KIND CUDA_PINS_KEY
  log "$CUDA_ENV_KIND toolkit: $(nvcc --version | tail -n 2 | head -n 1)"
}

cuda_env_target_dir() {
  export CARGO_TARGET_DIR="$CUDA_CACHE/cuda-target/$CUDA_PINS_KEY"
  mkdir -p "$CARGO_TARGET_DIR"
  # older dirs of the same kind go (a system toolkit's dir never prunes the pinned one's)
  local same='[0-9a-f]*'
  case "$CUDA_PINS_KEY" in system-*) same='system-*' ;; esac
  find "$CUDA_CACHE/cuda-target" -mindepth 1 -maxdepth 1 -name "$same" ! -name "$CUDA_PINS_KEY" -exec rm -rf {} +
}

cuda_env_gpu_cap() {
  local cap
  cap=$(timeout 20 nvidia-smi -i "${1:-0}" --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
  case "$cap" in
    '' | *[!0-9]*) return 1 ;;
    *) echo "$cap" ;;
  esac
}
