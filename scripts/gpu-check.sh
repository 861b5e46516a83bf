#!/usr/bin/env bash
# GPU check, one command on a CUDA host (NOT RUN on a GPU yet: no session so far had one; its
# --dry-run and `bash -n` run in CI-less sessions).
#
# Steps, each under its own timeout and all within one overall budget (default 600 s; a step
# that overruns is killed and named in the report; steps after an exhausted budget are not run):
#   gpu      nvidia-smi: the GPU's name, memory, driver and compute capability (CUDA_COMPUTE_CAP
#            comes from here unless set; never a fixed value on a GPU host)
#   toolkit  the pinned CUDA compiler of scripts/cuda-check.sh (scripts/lib/cuda-env.sh: PyPI
#            wheels, CUDARC_CUDA_VERSION), or the host's nvcc with LLORCH_CUDA_SYSTEM=1
#   build    cargo build --release --workspace --bins --examples --features llorch-candled/cuda
#            and the engine's test binary, in the CUDA target dir cuda-check.sh also uses
#            (~/.cache/llorch/cuda-target/<hash of the pins>: its candle-kernels PTX is reused)
#   models   scripts/fetch-test-model.sh all (SmolLM2 Q4_1, Gemma 3 Q4_K_M)
#   engine   engine tests on cuda:N (LLORCH_TEST_DEVICE): generic_path:: (llama.cpp parity,
#            batching vs solo within the GPU tolerance and same-device determinism, chunked
#            prefill, prompt cache, cancel) and gemma3:: (sliding window)
#   matrix   scripts/test_all_models.sh on the cpu and cuda backends (workers over HTTP, the
#            llama.cpp parity fixtures included) -> model-report-cuda.json
#   bench    llorch-bench --device cuda:N: pp512 and tg64 at batch 1, aggregate decode of 8
#            streams (--batch 8)
#   peer     llama.cpp's numbers on the same GPU (scripts/bench-peer.py --device cuda:N), only
#            when a `llama-bench` is on PATH (else recorded as skipped, not a failure)
# then prints the MODEL_SUPPORT.md matrix rows of the report (scripts/model_support_md.py
# --rows) and writes OUT/report.md: each step pass/FAIL/OVERRAN with its seconds and numbers.
# Exits 1 when any step fails or overruns. Merge the matrix into MODEL_SUPPORT.md with
#   python3 scripts/model_support_md.py target/model-report.json target/gpu-check/model-report-cuda.json > MODEL_SUPPORT.md
#
# Needs: nvidia-smi (the driver), Rust, python3 (pip for the toolkit and models), and network
# access to crates.io and PyPI, or both prepared in advance: a cargo vendor directory named by
# CARGO_VENDOR_DIR, the GGUF files in LLORCH_MODEL_CACHE (scripts/fetch-test-model.sh) and the
# toolkit in ~/.cache/llorch/cuda-toolkit (run scripts/cuda-check.sh once).
#
# usage: scripts/gpu-check.sh [--gpu N] [--out DIR] [--budget SECONDS] [--dry-run]
#   --gpu      GPU index (default 0)
#   --out      report directory (default target/gpu-check)
#   --budget   overall limit in seconds (default 600, env LLORCH_GPU_CHECK_BUDGET_S)
#   --dry-run  print the steps, their timeouts and commands, and what the toolkit and compute
#              capability would be; runs nothing, needs no GPU
set -uo pipefail
cd "$(dirname "$0")/.."

GPU=0
OUT=target/gpu-check
BUDGET="${LLORCH_GPU_CHECK_BUDGET_S:-600}"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) GPU="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$GPU$BUDGET" in *[!0-9]*) echo "--gpu and --budget take numbers" >&2; exit 2 ;; esac

log() { echo "== gpu-check: $*" >&2; }
. scripts/lib/cuda-env.sh

case "$OUT" in /*) OUT_ABS=$OUT ;; *) OUT_ABS="$PWD/$OUT" ;; esac
[ "$DRY" = 1 ] || mkdir -p "$OUT_ABS"
T0=$(date +%s)
STATUS=0
declare -A RESULT=()
STEPS_TSV="$OUT_ABS/steps.tsv"
[ "$DRY" = 1 ] || : >"$STEPS_TSV"

record() { # NAME RESULT SECONDS DETAIL
  RESULT[$1]=$2
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS_TSV"
  case "$2" in pass|skipped) ;; *) STATUS=1 ;; esac
  log "step $1: $2 (${3} s)${4:+: $4}"
}

# run_step NAME LIMIT_S NEEDS COMMAND: run COMMAND (a bash command line) under `timeout`, limited
# to LIMIT_S and to what is left of the budget, with its output in OUT/NAME.log; NEEDS lists
# the steps (comma-separated, or -) that must have passed first.
run_step() {
  local name=$1 limit=$2 needs=$3 cmd=$4
  if [ "$DRY" = 1 ]; then
    printf '%-8s timeout %4s s  needs %-14s %s\n' "$name" "$limit" "$needs" "$cmd"
    return 0
  fi
  local n
  for n in ${needs//,/ }; do
    [ "$n" = - ] || [ "${RESULT[$n]:-}" = pass ] || { record "$name" "not run" 0 "step $n did not pass"; return 1; }
  done
  local left=$((BUDGET - ($(date +%s) - T0)))
  if [ "$left" -le 0 ]; then
    record "$name" "not run" 0 "the ${BUDGET} s budget was spent"
    return 1
  fi
  local t=$limit by="its own ${limit} s limit"
  if [ "$left" -lt "$limit" ]; then
    t=$left
    by="the ${left} s left of the ${BUDGET} s budget"
  fi
  log "step $name (at most ${t} s): $cmd"
  local s0 rc=0
  s0=$(date +%s)
  timeout -k 10 "$t" bash -c "$cmd" >"$OUT_ABS/$name.log" 2>&1 || rc=$?
  local dt=$(($(date +%s) - s0))
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record "$name" OVERRAN "$dt" "killed after ${t} s ($by)"
  elif [ "$rc" != 0 ]; then
    record "$name" FAIL "$dt" "exit $rc; last lines: $(tail -n 3 "$OUT_ABS/$name.log" | tr '\n\t' '  ' | cut -c1-300)"
  else
    record "$name" pass "$dt" ""
  fi
  [ "$rc" = 0 ]
}

export GPU OUT_ABS
if [ "$DRY" = 1 ]; then
  echo "gpu-check --dry-run: GPU $GPU, budget $BUDGET s, report $OUT_ABS/report.md"
  echo "toolkit: $(cuda_env_describe)"
  echo "compute capability: ${CUDA_COMPUTE_CAP:+CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP (set)}${CUDA_COMPUTE_CAP:-from nvidia-smi -i $GPU --query-gpu=compute_cap}"
  echo "target dir: \$LLORCH_CACHE_DIR/cuda-target/<key> (key: the pins' hash $CUDA_PINS_KEY, or system-<hash of nvcc --version>)"
  echo "binaries: \$LLORCH_CACHE_DIR/cuda-target/<key>/release (\$BIN below)"
  echo "steps:"
fi

# --- gpu: the driver's view of the GPU; the compute capability to compile for
run_step gpu 30 - \
  'nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version,compute_cap --format=csv | tee "$OUT_ABS/gpu-info.csv" && nvidia-smi -i "$GPU" --query-gpu=name --format=csv,noheader | grep .'
if [ "$DRY" = 0 ] && [ "${RESULT[gpu]}" = pass ] && [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
  CUDA_COMPUTE_CAP=$(cuda_env_gpu_cap "$GPU") || { record gpu FAIL 0 "nvidia-smi gave no compute_cap for GPU $GPU"; CUDA_COMPUTE_CAP=; }
fi
export CUDA_COMPUTE_CAP

# --- toolkit: install (or find) the compiler in a child under the timeout, then set it up here
run_step toolkit 300 gpu \
  'log() { echo "$*" >&2; }; . scripts/lib/cuda-env.sh; if [ "${LLORCH_CUDA_SYSTEM:-}" = 1 ]; then command -v nvcc; else _cuda_env_install; fi'
if [ "$DRY" = 0 ] && [ "${RESULT[toolkit]}" = pass ]; then
  if cuda_env_setup 2>>"$OUT_ABS/toolkit.log"; then
    cuda_env_target_dir
  else
    record toolkit FAIL 0 "cuda_env_setup failed (toolkit.log)"
  fi
fi
BIN="${CARGO_TARGET_DIR:-target}/release"
export BIN CARGO_TARGET_DIR

if [ -n "${CARGO_VENDOR_DIR:-}" ] && [ "$DRY" = 0 ]; then
  # Every cargo call below (test_all_models.sh's too) builds from the vendored sources.
  log "offline build from $CARGO_VENDOR_DIR"
  CARGO_HOME=$(mktemp -d)
  export CARGO_HOME
  printf '[net]\noffline = true\n[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "%s"\n' \
    "$(cd "$CARGO_VENDOR_DIR" && pwd)" >"$CARGO_HOME/config.toml"
fi

# --- build: the binaries test_all_models.sh builds (same command: its own build is then a
# no-op) and the engine's test binary
run_step build 420 toolkit \
  'cargo build --release --workspace --bins --examples --features llorch-candled/cuda && cargo test --release -p llorch-engine --features cuda --test it --no-run'

run_step models 120 - \
  'scripts/fetch-test-model.sh all > "$OUT_ABS/models.txt"'

run_step engine 240 build,models \
  'LLORCH_TEST_DEVICE="cuda:$GPU" CI=true cargo test --release -p llorch-engine --features cuda --test it -- --test-threads=1 generic_path:: gemma3::'

run_step matrix 300 build,models \
  'CUDA_VISIBLE_DEVICES="$GPU" LLORCH_FEATURES=llorch-candled/cuda scripts/test_all_models.sh --bin-dir "$BIN" --backends cpu,cuda --report "$OUT_ABS/model-report-cuda.json"'

# CUDA_VISIBLE_DEVICES is not set here: --device names the GPU as the worker's --device does
run_step bench 180 build,models \
  '"$BIN/llorch-bench" --model "$(sed -n 1p "$OUT_ABS/models.txt")" --device "cuda:$GPU" --pp 512 --tg 64 --rounds 3 --batch 8'

if [ "$DRY" = 1 ] || command -v llama-bench >/dev/null; then
  run_step peer 180 build,models \
    'python3 scripts/bench-peer.py --peer "$(command -v llama-bench)" --ours "$BIN/llorch-bench" --model "$(sed -n 1p "$OUT_ABS/models.txt")" --device "cuda:$GPU" --pp 512 --tg 64 --rounds 2'
else
  record peer skipped 0 "no llama-bench on PATH (build one with GGML_CUDA=ON for llama.cpp's numbers)"
fi

if [ "$DRY" = 1 ]; then
  echo "then: scripts/model_support_md.py --rows OUT/model-report-cuda.json, and $OUT_ABS/report.md"
  exit 0
fi

# --- MODEL_SUPPORT.md rows and the report
ROWS=""
if [ -s "$OUT_ABS/model-report-cuda.json" ]; then
  ROWS=$(python3 scripts/model_support_md.py --rows "$OUT_ABS/model-report-cuda.json" 2>&1) || ROWS="(model_support_md.py failed: $ROWS)"
  echo "$ROWS"
fi
TOTAL=$(($(date +%s) - T0))
python3 - "$OUT_ABS" "$STATUS" "$TOTAL" "$BUDGET" "$GPU" "$(git rev-parse --short HEAD 2>/dev/null)" \
  "${CUDA_ENV_KIND:-?} toolkit, CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-?}" "$ROWS" <<'PY'
import json, os, re, sys
out, status, total, budget, gpu, commit, toolkit, rows = sys.argv[1:9]
def read(name):
    try:
        return open(os.path.join(out, name), errors="replace").read()
    except OSError:
        return ""
steps = [l.split("\t") for l in read("steps.tsv").splitlines() if l]
info = [l for l in read("gpu-info.csv").splitlines() if l.startswith(f"{gpu},")]
r = []
w = r.append
w(f"# GPU check: {'PASS' if status == '0' else 'FAIL'}\n")
w(f"- commit `{commit}`, GPU {gpu}: {info[0] if info else 'unknown (see gpu.log)'}")
w(f"- {toolkit}; {total} s of the {budget} s budget\n")
w("| step | result | s | detail |\n|---|---|---|---|")
for name, res, secs, detail in steps:
    w(f"| {name} | {res} | {secs} | {detail.replace('|', '/')} |")
w("\n## Numbers\n")
eng = read("engine.log")
m = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed", eng)
if m:
    w(f"- engine tests on cuda:{gpu}: " + ", ".join(f"{p} passed, {f} failed" for _, p, f in m))
for line in eng.splitlines():
    if "mean |" in line or "max |" in line:
        w(f"  - {line.strip()[:200]}")
bench = read("bench.log")
def rate(pattern):
    x = re.search(pattern, bench, re.M)
    return x.group(1) if x else "?"
if bench:
    pp = rate(r"^pp512\s+tok/s: min\s+[\d.]+\s+median\s+([\d.]+)")
    tg = rate(r"^tg64\s+tok/s: min\s+[\d.]+\s+median\s+([\d.]+)")
    b8 = rate(r"^tg64 x8\s+batched:\s+([\d.]+)")
    w(f"- llorch-bench cuda:{gpu} (SmolLM2 Q4_1, median of 3): pp512 {pp} tok/s, tg64 {tg} tok/s "
      f"at batch 1; 8 streams {b8} tok/s aggregate")
peer = read("peer.log")
for line in peer.splitlines():
    if line.strip().startswith(("pp", "tg")):
        w(f"- llama.cpp vs llorch: {line.strip()}")
try:
    rep = json.load(open(os.path.join(out, "model-report-cuda.json")))
    for x in rep["results"]:
        bad = [c["name"] for c in x.get("checks", []) if not c.get("ok")]
        w(f"- matrix {x['model']} on {x['backend']}: {x['status']}" + (f" (failed: {', '.join(bad)})" if bad else ""))
except (OSError, ValueError, KeyError):
    w("- model matrix: no report")
if rows:
    w("\n## MODEL_SUPPORT.md rows\n")
    w(rows)
w("\nLogs: one per step in this directory (`<step>.log`).")
open(os.path.join(out, "report.md"), "w").write("\n".join(r) + "\n")
PY
cat "$OUT_ABS/report.md" >&2
log "done (status $STATUS) in $TOTAL s: $OUT_ABS/report.md"
exit "$STATUS"
