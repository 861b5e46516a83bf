#!/usr/bin/env bash
# The engine's kernel tests (quantized matmuls, attention) built for x86-64-v3: AVX2, FMA and
# F16C without AVX-512. Those are the code paths a CPU without AVX-512 VNNI runs (maddubs instead
# of VNNI's dpbusd, the Q5_0 fifth-bit spread without byte masks, Q8_0's sign trick), which the
# native build on an AVX-512 machine never compiles. Own target dir, cached under ~/.cache/llorch:
# ~4 min cold on 2 cores, about a minute warm.
#
# usage: scripts/portable-kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ]; then
  echo "portable-kernels: $(uname -m) host; these are x86-64 code paths, nothing to check here"
  exit 0
fi
export RUSTFLAGS="-C target-cpu=x86-64-v3"
export CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/llorch/x86-64-v3-target"
# one crate's library tests in their own target dir: -p resolves features for this crate alone,
# which is what this build is about (the workspace build is not touched)
cargo test --release --quiet -p llorch-engine --lib -- qmatmul attention
