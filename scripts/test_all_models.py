#!/usr/bin/env python3
"""Model support matrix runner (called by scripts/test_all_models.sh).

For every model given with --model and every backend `llorch-pool backends list` reports (or
--backends), in a throw-away pool home: `models import`, `worker spawn`, a fixed prompt set over
HTTP (parity fixture, greedy chat, seeded sampling, a throughput prompt), peak RSS from /proc,
`worker stop`. Writes a JSON report; exits 1 when any check or budget fails.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Chat prompts run greedily on every model.
CHAT = [
    ("capital", [{"role": "user", "content": "What is the capital of France?"}]),
    ("ocean", [{"role": "user", "content": "Write one sentence about the ocean."}]),
    ("colour", [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name a colour."},
    ]),
]
CHAT_MAX_TOKENS = 96
# A raw (template-free) question every model here answers with "Paris".
RAW_QA = "Q: What is the capital of France?\nA:"

# Raw prompt for prompt/generation throughput (about 120-150 tokens on these vocabularies).
PERF_TEXT = (
    "The lighthouse keeper kept a logbook for forty years. Every evening he wrote down the "
    "weather, the ships that passed, the colour of the sea and the birds that rested on the "
    "railing. When the light was finally automated, the logbook went to the town museum, "
    "where children now read it aloud on rainy afternoons. Some entries are only a line long; "
    "others fill a page with storms, rescues and the long silences of winter. On the last page "
    "he wrote that the sea had never once been the same colour twice, and that he had been "
    "glad, every single day, to be the one who was watching it. The museum keeps the book "
    "open at that page. Visitors who read it often"
)
PERF_MAX_TOKENS = 64
PERF_ROUNDS = 2

# Text that must never reach the client: decoding errors and raw end-of-turn markers.
FORBIDDEN = ["\ufffd", "<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>"]

# Per-model bounds (CPU, 2 threads), in two sets.
# - BENCH_BUDGETS (`--budgets bench`, what scripts/bench.sh runs on a release build): the tight
#   acceptance limits this machine kind meets when quiet. A missed time budget is reported but
#   not judged while other processes take more than MAX_OTHER_CPU of the CPUs.
# - CI_BOUNDS (the default, what scripts/test.sh runs): correctness plus bounds that a machine
#   three times slower, or one whose other core is saturated, still meets. They catch a lost SIMD
#   kernel or a copy per token (10x), never a busy day. Memory is not a speed: the RSS limits are
#   the same in both sets.
# eos_min: how many of the CHAT answers must end at end-of-turn; capital_answer: whether the
# greedy chat answer to the capital question must name Paris. SmolLM2-135M's greedy chat answer
# to it wanders (in llama.cpp too: fixtures/smollm2-greedy.json) and runs to max_tokens on the
# Q8_0 safetensors path. The Gemma file is a base model served through the transcript template:
# its answers end when it starts the next dialogue line, and it names Paris. Two of three must
# end: greedy, the ocean answer meets a three-way near-tie at its fourth token (" a" -2.17,
# " not" -2.33, " go…" -2.36 nats; llama.cpp b11434 takes " going" and ends the line, this
# engine " a", as its parity rule allows below a 0.5-nat gap) and then repeats a sentence.
BENCH_BUDGETS = {
    "smollm2-135m": {"load_ms": 2000, "peak_rss_mb": 400, "peak_rss_with_prompt_logprobs_mb": 400,
                     "prefill_tps": 60, "decode_tps": 20, "eos_min": 1},
    # after the parity requests the worker's prompt cache holds their sequences (Gemma: 18 KB
    # per token, ~60 MB for the fixture's prompts), hence 700 there
    "gemma3-270m": {"load_ms": 2000, "peak_rss_mb": 600, "peak_rss_with_prompt_logprobs_mb": 700,
                    "prefill_tps": 60, "decode_tps": 12, "eos_min": 2, "capital_answer": True},
    "smollm2-135m-st": {"load_ms": 5000, "peak_rss_mb": 1400, "peak_rss_with_prompt_logprobs_mb": 1400,
                        "prefill_tps": 60, "decode_tps": 20, "eos_min": 1},
}
CI_BOUNDS = {
    model: {**b, "load_ms": 10000 if b["load_ms"] <= 2000 else 20000, "prefill_tps": 10, "decode_tps": 4}
    for model, b in BENCH_BUDGETS.items()
}
DEFAULT_BUDGET = {"eos_min": 1}
# With --budgets bench: above this share of the CPUs taken by other processes while a worker
# loads or runs the throughput requests, a missed load-time or tok/s budget is reported but not
# enforced. The CI bounds are always enforced.
MAX_OTHER_CPU = 0.15
BUDGET_SETS = {"ci": CI_BOUNDS, "bench": BENCH_BUDGETS}


def log(msg):
    print(f"test_all_models: {msg}", file=sys.stderr, flush=True)


class Pool:
    """`llorch-pool --json` in a private pool home."""

    def __init__(self, bin_dir, home):
        self.exe = str(bin_dir / "llorch-pool")
        self.env = dict(os.environ, LLORCH_HOME=str(home), LLORCH_WORKER_BIN=str(bin_dir / "llorch-candled"))

    def run(self, *args, timeout=600):
        p = subprocess.run([self.exe, "--json", "--quiet", *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        try:
            out = json.loads(p.stdout) if p.stdout.strip() else {}
        except json.JSONDecodeError:
            out = {"error": {"kind": "bad_output", "message": p.stdout[-2000:]}}
        if p.returncode != 0:
            msg = out.get("error", {}).get("message") or p.stderr.strip()[-2000:]
            raise RuntimeError(f"llorch-pool {' '.join(args)}: exit {p.returncode}: {msg}")
        return out


def execute(url, body, timeout=600, started=None):
    """POST /execute and collect the SSE stream: (token events, end event). The `started`
    event is stored in the `started` dict when one is given."""
    host = url.split("://", 1)[1].rstrip("/")
    conn = http.client.HTTPConnection(host, timeout=timeout)
    conn.request("POST", "/execute", json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"/execute answered {resp.status}: {resp.read()[:500]!r}")
    tokens, end = [], None
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line.startswith("data:"):
            continue
        ev = json.loads(line[5:].strip())
        if ev["type"] == "token":
            tokens.append(ev)
        elif ev["type"] == "started" and started is not None:
            started.update(ev)
        elif ev["type"] == "end":
            end = ev
        elif ev["type"] == "error":
            raise RuntimeError(f"worker error event: {ev.get('code')}: {ev.get('message')}")
    conn.close()
    if end is None:
        raise RuntimeError("stream ended without an `end` event")
    return tokens, end


def http_json(url, path):
    host = url.split("://", 1)[1].rstrip("/")
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


def cpu_seconds(pid=None):
    """CPU time used so far by one process (/proc/PID/stat) or by the whole machine (/proc/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        if pid is None:
            v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
            return (sum(v) - v[3] - v[4]) / tick  # all but idle and iowait
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError):
        return None


def proc_status_kb(pid, key):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Checks:
    def __init__(self):
        self.items = []

    def add(self, name, ok, detail=""):
        self.items.append({"name": name, "ok": bool(ok), "detail": detail})
        log(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")

    def ok(self):
        return all(c["ok"] for c in self.items)


def text_of(tokens):
    return "".join(t["t"] for t in tokens)


def forbidden_in(text):
    return [f for f in FORBIDDEN if f in text]


def run_parity(url, fixture, checks, samples):
    """The fixture's rule over HTTP: free-running greedy prefix, then teacher forcing (the prompt
    plus llama.cpp's greedy tokens sent as prompt_ids with prompt_logprobs)."""
    tol = fixture.get("tolerance", {"step": 0.6, "mean": 0.10})
    for case in fixture["cases"]:
        prompt, ref = case["prompt_ids"], case["greedy_ids"]
        toks, end = execute(url, {"prompt_ids": prompt, "max_tokens": len(ref), "temperature": 0.0})
        ids = [t["id"] for t in toks]
        matched = 0
        while matched < min(len(ids), len(ref)) and ids[matched] == ref[matched]:
            matched += 1
        # The end-of-turn id ends the stream without a token event.
        if end["stop_reason"] == "eos" and matched == len(ids) and len(ref) == len(ids) + 1:
            matched += 1
        started = {}
        execute(url, {"prompt_ids": prompt + ref, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 2},
                started=started)
        forced = started["prompt_logprobs"][len(prompt) - 1:]
        diffs, top1_bad = [], []
        for i, (lp, step) in enumerate(zip(forced, case["steps"])):
            diffs.append(abs(lp["logprob"] - step["logprob"]))
            if step["top"][0][1] - step["top"][1][1] >= 0.5 and lp["top"][0]["id"] != ref[i]:
                top1_bad.append(i)
        worst = max(diffs, default=0.0)
        mean = sum(diffs) / len(diffs) if diffs else 0.0
        must = case["must_match_prefix"]
        text = text_of(toks)
        ok = (matched >= must and worst <= tol["step"] and mean <= tol["mean"] and not top1_bad
              and len(diffs) == len(ref) and not forbidden_in(text))
        checks.add(f"parity/{case['name']}", ok,
                   f"greedy prefix {matched}/{len(ref)} (must {must}); teacher-forced |Δlogprob| mean {mean:.3f} "
                   f"max {worst:.3f} (limits {tol['mean']}, {tol['step']})"
                   + (f"; top-1 differs at clear steps {top1_bad}" if top1_bad else ""))
        samples.append({"kind": "parity", "name": case["name"], "text": text,
                        "stop_reason": end["stop_reason"], "tokens_out": end["tokens_out"]})


def run_chat(url, budget, checks, samples):
    toks, end = execute(url, {"prompt": RAW_QA, "max_tokens": 8, "temperature": 0.0})
    text = text_of(toks)
    checks.add("raw/capital", "Paris" in text and not forbidden_in(text), f"{RAW_QA!r} -> {text!r}")
    samples.append({"kind": "greedy-raw", "name": "capital", "prompt": RAW_QA, "text": text,
                    "stop_reason": end["stop_reason"], "tokens_out": end["tokens_out"]})
    eos = 0
    for name, messages in CHAT:
        toks, end = execute(url, {"messages": messages, "max_tokens": CHAT_MAX_TOKENS, "temperature": 0.0})
        text = text_of(toks)
        bad = forbidden_in(text)
        eos += end["stop_reason"] == "eos"
        checks.add(f"chat/{name}", text.strip() and not bad,
                   f"{end['stop_reason']} after {end['tokens_out']} tokens" + (f"; contains {bad}" if bad else ""))
        if name == "capital" and budget.get("capital_answer"):
            checks.add("chat/capital-answer", "Paris" in text, f"greedy chat answer names Paris: {text.strip()[:80]!r}")
        samples.append({"kind": "greedy-chat", "name": name, "prompt": messages[-1]["content"], "text": text,
                        "stop_reason": end["stop_reason"], "tokens_out": end["tokens_out"]})
    need = budget.get("eos_min", 1)
    checks.add("chat/stops-at-end-of-turn", eos >= need, f"{eos}/{len(CHAT)} greedy answers ended at end-of-turn (need {need})")


def run_sampled(url, checks, samples):
    body = {"messages": CHAT[1][1], "max_tokens": 48, "temperature": 0.8, "top_p": 0.95, "seed": 7}
    runs = [execute(url, body) for _ in range(2)]
    a, b = ([t["id"] for t in toks] for toks, _ in runs)
    text = text_of(runs[0][0])
    bad = forbidden_in(text)
    checks.add("sampled/seeded-repeatable", a == b and not bad and text.strip(),
               f"seed 7 twice: {'same' if a == b else 'different'} {len(a)} tokens, {runs[0][1]['stop_reason']}"
               + (f"; contains {bad}" if bad else ""))
    samples.append({"kind": "sampled-chat", "name": "ocean-t0.8-seed7", "prompt": CHAT[1][1][-1]["content"],
                    "text": text, "stop_reason": runs[0][1]["stop_reason"], "tokens_out": runs[0][1]["tokens_out"]})


def run_perf(url, pid, checks):
    """Best-of-N throughput, and the share of the CPUs other processes took meanwhile."""
    best = {"prefill_tps": 0.0, "decode_tps": 0.0, "prompt_tokens": 0, "decode_tokens": 0}
    t0, busy0, own0 = time.monotonic(), cpu_seconds(), cpu_seconds(pid)
    for r in range(PERF_ROUNDS):
        # a different opening each round: the worker's prompt cache must not serve the prefill
        prompt = f"Story {r + 1}. {PERF_TEXT}"
        started = {}
        toks, end = execute(url, {"prompt": prompt, "max_tokens": PERF_MAX_TOKENS, "temperature": 0.0},
                            started=started)
        if started.get("tokens_cached"):
            checks.add("perf/uncached", False, f"round {r + 1} reused {started['tokens_cached']} cached tokens")
        best["prefill_tps"] = max(best["prefill_tps"], end["prefill_tokens_per_sec"])
        best["decode_tps"] = max(best["decode_tps"], end["decode_tokens_per_sec"])
        best["prompt_tokens"], best["decode_tokens"] = end["tokens_in"], end["tokens_out"]
        bad = forbidden_in(text_of(toks))
        if bad:
            checks.add("perf/text", False, f"contains {bad}")
    busy1, own1 = cpu_seconds(), cpu_seconds(pid)
    if None not in (busy0, own0, busy1, own1):
        others = (busy1 - busy0) - (own1 - own0)
        best["perf_other_cpu_share"] = round(max(0.0, others) / ((time.monotonic() - t0) * os.cpu_count()), 2)
    return best


def budget_checks(metrics, budget, checks, lenient_when_busy):
    for key, label, upper, share in [("load_ms", "load time (ms)", True, "load_other_cpu_share"),
                                     ("peak_rss_mb", "peak RSS (MB)", True, None),
                                     ("peak_rss_with_prompt_logprobs_mb", "peak RSS with prompt_logprobs (MB)",
                                      True, None),
                                     ("prefill_tps", "prompt tok/s", False, "perf_other_cpu_share"),
                                     ("decode_tps", "generation tok/s", False, "perf_other_cpu_share")]:
        if key not in budget or metrics.get(key) is None:
            continue
        busy = (metrics.get(share) or 0.0) if share else 0.0
        if lenient_when_busy and busy > MAX_OTHER_CPU and (metrics[key] > budget[key] if upper else metrics[key] < budget[key]):
            # A missed time budget says little about the code when other jobs take the CPUs.
            checks.add(f"budget/{key}", True, f"{label} {metrics[key]:.1f} misses {budget[key]}, not judged: "
                                              f"other processes used {busy:.0%} of the CPUs meanwhile "
                                              f"(limit {MAX_OTHER_CPU:.0%})")
            continue
        v, lim = metrics[key], budget[key]
        ok = v <= lim if upper else v >= lim
        checks.add(f"budget/{key}", ok, f"{label} {v:.1f} {'<=' if upper else '>='} {lim}")


def test_one(pool, model, backend, threads, budget_set):
    """Spawn, test, stop. Returns the result record."""
    rec = {"model": model["key"], "model_id": model["id"], "backend": backend, "checks": [], "samples": [],
           "metrics": {}}
    checks, samples = Checks(), rec["samples"]
    budget = BUDGET_SETS[budget_set].get(model["id"], DEFAULT_BUDGET)
    if backend != "cpu":  # the CPU time and memory budgets say nothing about a GPU
        budget = {k: v for k, v in budget.items() if k in ("eos_min", "capital_answer")}
    log(f"{model['key']} on {backend}")
    wid = None
    try:
        args = ["worker", "spawn", backend, "--model", model["id"]]
        if threads:
            args += ["--threads", str(threads)]
        t0, busy0 = time.monotonic(), cpu_seconds()
        view = pool.run(*args)
        spawn_s = time.monotonic() - t0
        wid, url, pid = view["id"], view["url"], view["pid"]
        busy1, own = cpu_seconds(), cpu_seconds(pid)
        if None not in (busy0, busy1, own):
            others = max(0.0, busy1 - busy0 - own)
            rec["metrics"]["load_other_cpu_share"] = round(others / (spawn_s * os.cpu_count()), 2)
        health = http_json(url, "/health")
        rss_kb = proc_status_kb(pid, "VmRSS")
        rec.update({k: health.get(k) for k in ("format", "architecture", "quantization", "runtime_quantization",
                                                "context_length", "device", "threads", "simd")})
        rec["metrics"].update({"load_ms": health["load_time_ms"], "spawn_s": round(spawn_s, 2),
                               "rss_after_load_mb": rss_kb / 1024 if rss_kb else None})
        checks.add("load", True, f"{health['architecture']} {health['format']} {health['quantization']} "
                                 f"(runs as {health['runtime_quantization']}), ready in {health['load_time_ms']:.0f} ms")
        chat = health.get("chat_template") or {}
        rec["chat_template"] = chat
        probe = chat.get("end_of_turn_logprob")
        checks.add("chat/template", bool(chat.get("name")),
                   f"{chat.get('name')} ({chat.get('reason')})"
                   + (f"; `{chat.get('end_of_turn_token')}` log-prob after a finished reply {probe:.1f}"
                      if probe is not None and "log-prob" not in (chat.get("reason") or "") else ""))
        rec["metrics"].update(run_perf(url, pid, checks))
        run_chat(url, budget, checks, samples)
        run_sampled(url, checks, samples)
        hwm = proc_status_kb(pid, "VmHWM")
        rec["metrics"]["peak_rss_mb"] = hwm / 1024 if hwm else None
        if model.get("fixture"):
            fixture = json.loads((ROOT / "fixtures" / model["fixture"]).read_text())
            run_parity(url, fixture, checks, samples)
            # prompt_logprobs keeps every position's logits of a prefill chunk: reported apart.
            hwm = proc_status_kb(pid, "VmHWM")
            rec["metrics"]["peak_rss_with_prompt_logprobs_mb"] = hwm / 1024 if hwm else None
        budget_checks(rec["metrics"], budget, checks, lenient_when_busy=budget_set == "bench")
        rec["worker_cpu_s"] = cpu_seconds(pid)
    except Exception as e:  # noqa: BLE001 - any failure is a failed cell, reported with its reason
        checks.add("run", False, str(e)[-3000:])
    finally:
        if wid:
            try:
                pool.run("worker", "stop", wid, "--grace", "5")
            except Exception as e:  # noqa: BLE001
                checks.add("stop", False, str(e))
    rec["checks"] = checks.items
    rec["status"] = "pass" if checks.ok() else "fail"
    return rec


def hf_cache_dir():
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                     os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def cached_catalog_models(pool, skip_ids):
    """Catalog entries whose files already sit in the local Hugging Face cache (no download)."""
    found, cache = [], hf_cache_dir()
    for m in pool.run("models", "catalog")["models"]:
        if m["id"] in skip_ids or not m.get("repo"):
            continue
        snaps = cache / ("models--" + m["repo"].replace("/", "--")) / "snapshots"
        for snap in sorted(snaps.glob("*")) if snaps.is_dir() else []:
            if m["format"] == "gguf":
                files = [snap / f for f in m["files"] if (snap / f).is_file()]
                if files:
                    found.append({"key": f"{m['id']}-hf-cache", "id": m["id"], "path": str(files[0])})
                    break
            elif (snap / "config.json").is_file() and (snap / "tokenizer.json").is_file() and \
                    any(snap.glob("*.safetensors")):
                found.append({"key": f"{m['id']}-hf-cache", "id": m["id"], "path": str(snap)})
                break
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", required=True, type=Path)
    ap.add_argument("--report", required=True, type=Path)
    ap.add_argument("--model", action="append", default=[], metavar="KEY=ID=PATH[=FIXTURE]",
                    help="a model to test: report key, pool id, file or directory, and optionally the "
                         "llama.cpp reference in fixtures/ that applies to it")
    ap.add_argument("--backends", default="", help="comma list (default: every available backend)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--budgets", choices=sorted(BUDGET_SETS), default="ci",
                    help="ci: correctness and bounds a 3x slower machine meets (default); "
                         "bench: this machine kind's tight time budgets (scripts/bench.sh)")
    ap.add_argument("--no-hf-cache", action="store_true", help="skip catalog models found in the HF cache")
    a = ap.parse_args()

    busy_at_start = cpu_seconds()
    home = Path(tempfile.mkdtemp(prefix="llorch-models-"))
    pool = Pool(a.bin_dir, home)
    started = time.monotonic()
    results, not_run = [], []
    try:
        models = []
        for spec in a.model:
            key, mid, path, *rest = spec.split("=")
            models.append({"key": key, "id": mid, "path": path, "fixture": rest[0] if rest else None})
        if not a.no_hf_cache:
            models += cached_catalog_models(pool, {m["id"] for m in models})
        backends = pool.run("backends", "list")["backends"]
        wanted = [b for b in a.backends.split(",") if b]
        for b in backends:
            if wanted and b["name"] not in wanted:
                continue
            if not b["available"]:
                not_run.append({"backend": b["name"], "reason": b.get("detail") or "not available on this host"})
        use = [b["name"] for b in backends if b["available"] and (not wanted or b["name"] in wanted)]
        for m in models:
            try:
                view = pool.run("models", "import", m["path"], "--id", m["id"])
                m.update(size_bytes=view.get("local", {}).get("size_bytes"))
            except Exception as e:  # noqa: BLE001
                results.append({"model": m["key"], "model_id": m["id"], "backend": "-", "status": "fail",
                                "checks": [{"name": "import", "ok": False, "detail": str(e)}], "samples": [],
                                "metrics": {}})
                continue
            for b in use:
                rec = test_one(pool, m, b, a.threads, a.budgets)
                rec["size_mb"] = round((m.get("size_bytes") or 0) / 1e6, 1)
                results.append(rec)
    finally:
        try:
            pool.run("worker", "stop-all", "--grace", "5")
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(home, ignore_errors=True)

    # Share of the machine's CPU time that other processes used while the workers ran.
    other_share = None
    busy_at_end, elapsed = cpu_seconds(), time.monotonic() - started
    workers = [r.get("worker_cpu_s") for r in results]
    if busy_at_start is not None and busy_at_end is not None and None not in workers:
        others = busy_at_end - busy_at_start - sum(workers)
        other_share = round(max(0.0, others) / (elapsed * os.cpu_count()), 2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), None) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    report = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit + ("-dirty" if dirty else ""),
        "host": {"cpu": cpu, "logical_cpus": os.cpu_count(), "os": platform.platform(),
                 "other_cpu_share": other_share},
        "bin_dir": str(a.bin_dir),
        "budgets": a.budgets,
        "duration_s": round(time.monotonic() - started, 1),
        "results": results,
        "backends_not_run": not_run,
        "failed": [f"{r['model']}/{r['backend']}" for r in results if r["status"] != "pass"],
    }
    a.report.parent.mkdir(parents=True, exist_ok=True)
    a.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(f"report: {a.report} ({len(results)} runs, {report['duration_s']} s)")
    if report["failed"]:
        log(f"FAILED: {', '.join(report['failed'])}")
        return 1
    if not results:
        log("FAILED: nothing was tested")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
