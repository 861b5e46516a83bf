#!/usr/bin/env python3
"""Same-run serving comparison: our worker (`llorch-candled --parallel N`) vs llama.cpp's
`llama-server -np N`, both on the same model and threads, N concurrent streaming requests.

Each round sends N requests at once to each server (alternating which goes first) and records
the aggregate decode rate (tokens streamed by all requests / wall time from the first request to
the last token), the median time to first token, and the 1-minute load average before it. The
summary is the median over rounds of the per-round ratios (ours / llama.cpp). Both servers stay
up for the whole run and idle while the other one works.

Both get greedy requests with the same prompts (one per stream, so no prompt is shared) and the
same token limit; neither gets an "ignore end of sequence" switch (ours has none), so the rate
is tokens actually streamed over time.

usage: scripts/bench-serve.py --server PATH/llama-server --model FILE.gguf [--streams 8]
       [--tokens 128] [--rounds 3] [--threads 2] [--ours target/release/llorch-candled] [--json]
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, path, proc, what):
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench-serve: {what} exited with {proc.returncode} before it was ready")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"bench-serve: {what} not ready after 120 s")


def prompt(i):
    """A different prompt per stream: a counting sequence that invites a long greedy answer."""
    start = 3 + 7 * i
    return ", ".join(str(n) for n in range(start, start + 12)) + ","


def stream(port, path, body, token_marker, result):
    """POST `body`, read the SSE stream, record (first-token time, last-token time, tokens)."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        result.append(("error", f"HTTP {r.status}: {r.read()[:200]!r}"))
        return
    first = last = None
    tokens = 0
    for raw in r:
        line = raw.decode("utf-8", "replace")
        if token_marker(line):
            tokens += 1
            last = time.perf_counter()
            first = first or last
    result.append((t0, first, last, tokens))


def ours_marker(line):
    return '"type":"token"' in line


def llama_marker(line):
    # one SSE data line per generated token; the final line has "stop": true
    return line.startswith("data: ") and '"stop":false' in line.replace(" ", "")


def round_of(port, path, make_body, marker, streams):
    results, threads = [], []
    for i in range(streams):
        t = threading.Thread(target=stream, args=(port, path, make_body(i), marker, results))
        threads.append(t)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        sys.exit(f"bench-serve: request failed: {errors[0]}")
    start = min(r[0] for r in results)
    end = max(r[2] for r in results if r[2])
    tokens = sum(r[3] for r in results)
    ttft = statistics.median((r[1] - r[0]) * 1e3 for r in results if r[1])
    return tokens / (end - start), ttft, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="llama.cpp's llama-server binary")
    ap.add_argument("--model", required=True)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512, help="context per stream")
    ap.add_argument("--ours", default="target/release/llorch-candled")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    p_ours, p_llama = free_port(), free_port()
    quiet = subprocess.DEVNULL
    ours = subprocess.Popen(
        [args.ours, "--model", args.model, "--port", str(p_ours), "--threads", str(args.threads),
         "--parallel", str(args.streams), "--ctx-size", str(args.ctx)],
        stdout=quiet, stderr=quiet)
    llama = subprocess.Popen(
        [args.server, "-m", args.model, "--port", str(p_llama), "-t", str(args.threads),
         "-np", str(args.streams), "-c", str(args.ctx * args.streams), "--no-webui"],
        stdout=quiet, stderr=quiet)
    try:
        wait_ready(p_ours, "/health", ours, "llorch-candled")
        wait_ready(p_llama, "/health", llama, "llama-server")

        def ours_body(i):
            return {"job_id": f"serve-{time.time_ns()}-{i}", "prompt": prompt(i),
                    "max_tokens": args.tokens, "temperature": 0}

        def llama_body(i):
            return {"prompt": prompt(i), "n_predict": args.tokens, "stream": True,
                    "temperature": 0, "cache_prompt": False}

        runs = {
            "ours": lambda: round_of(p_ours, "/execute", ours_body, ours_marker, args.streams),
            "llama.cpp": lambda: round_of(p_llama, "/completion", llama_body, llama_marker,
                                          args.streams),
        }
        for name, run in runs.items():  # warm-up: first-touch of weights, thread pools
            run()
        rows = []
        for k in range(args.rounds):
            load = os.getloadavg()[0]
            order = ["ours", "llama.cpp"] if k % 2 == 0 else ["llama.cpp", "ours"]
            got = {name: runs[name]() for name in order}
            (ro, to, no), (rl, tl, nl) = got["ours"], got["llama.cpp"]
            rows.append({"load": load, "ours": ro, "llama": rl, "ttft_ours": to,
                         "ttft_llama": tl, "tokens_ours": no, "tokens_llama": nl})
            print(f"round {k + 1} (load {load:.2f}): {args.streams} streams  "
                  f"{ro:7.1f} vs {rl:7.1f} tok/s = {ro / rl:.2f}x   "
                  f"TTFT {to:6.1f} vs {tl:6.1f} ms   tokens {no} vs {nl}", file=sys.stderr)
    finally:
        for p in (ours, llama):
            p.terminate()
        for p in (ours, llama):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    ratio = [r["ours"] / r["llama"] for r in rows]
    ttft_ratio = [r["ttft_ours"] / r["ttft_llama"] for r in rows]
    summary = {
        "model": os.path.basename(args.model), "streams": args.streams, "tokens": args.tokens,
        "threads": args.threads, "rounds": rows,
        "ours_tok_s": statistics.median(r["ours"] for r in rows),
        "llama_tok_s": statistics.median(r["llama"] for r in rows),
        "ratio_median": statistics.median(ratio), "ratio_min": min(ratio), "ratio_max": max(ratio),
        "ttft_ratio_median": statistics.median(ttft_ratio),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    loads = [r["load"] for r in rows]
    print(f"{summary['model']}: {args.streams} concurrent streams of up to {args.tokens} tokens, "
          f"{args.threads} threads, {args.rounds} rounds, load average "
          f"{min(loads):.1f}-{max(loads):.1f}")
    print(f"  aggregate decode: ours {summary['ours_tok_s']:.1f} tok/s, llama-server "
          f"{summary['llama_tok_s']:.1f} tok/s, ratio median {summary['ratio_median']:.2f}x "
          f"({summary['ratio_min']:.2f}-{summary['ratio_max']:.2f})")
    print(f"  median TTFT: ours / llama-server = {summary['ttft_ratio_median']:.2f}")


if __name__ == "__main__":
    main()
