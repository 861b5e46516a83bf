"""The OpenAI-compatible API of orchestratord, driven by the official `openai` package.

A real orchestratord and one real llorch-candled worker (SmolLM2-135M) are started for the
session. Run through scripts/test-openai.sh, which installs the package and fetches the model.
Environment: LLORCH_BIN_DIR (orchestratord, llorch-candled), LLORCH_TEST_MODEL (the GGUF).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import openai
import pytest

MODEL_ID = "smollm2-135m"
MESSAGES = [{"role": "user", "content": "Name three colors."}]
IN_CI = os.environ.get("CI") in ("true", "1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def wait_for(pred, what, proc, log, timeout=60):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited ({proc.returncode}):\n{open(log).read()[-4000:]}")
        try:
            if pred():
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{what}: not ready after {timeout} s:\n{open(log).read()[-4000:]}")


@pytest.fixture(scope="session")
def stack():
    """orchestratord + one registered worker; yields the orchestrator's base URL."""
    bins = os.environ.get("LLORCH_BIN_DIR", "target/debug")
    model = os.environ.get("LLORCH_TEST_MODEL")
    if not model or not os.path.isfile(model):
        pytest.fail("LLORCH_TEST_MODEL is not set to the SmolLM2 GGUF (run scripts/test-openai.sh)")
    tmp = tempfile.mkdtemp(prefix="llorch-openai-")
    orch_port, worker_port = free_port(), free_port()
    base = f"http://127.0.0.1:{orch_port}"
    env = {k: v for k, v in os.environ.items() if k != "LLORCH_API_TOKEN"}
    procs = []
    try:
        orch_log = os.path.join(tmp, "orchestratord.log")
        orch = subprocess.Popen(
            [f"{bins}/orchestratord", "--bind", f"127.0.0.1:{orch_port}", "--db", f"{tmp}/o.sqlite"],
            stdout=subprocess.DEVNULL, stderr=open(orch_log, "w"), env=env,
        )
        procs.append(orch)
        wait_for(lambda: get_json(f"{base}/health")["status"] == "ok", "orchestratord", orch, orch_log)
        worker_log = os.path.join(tmp, "worker.log")
        worker = subprocess.Popen(
            [f"{bins}/llorch-candled", "--model", model, "--port", str(worker_port), "--threads", "2",
             "--worker-id", "py-worker", "--model-id", MODEL_ID, "--orchestrator-url", base],
            stdout=subprocess.DEVNULL, stderr=open(worker_log, "w"), env=env,
        )
        procs.append(worker)
        wait_for(lambda: any(m["id"] == MODEL_ID for m in get_json(f"{base}/v1/models")["data"]),
                 "worker registration", worker, worker_log)
        yield base
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def client(stack):
    return openai.OpenAI(base_url=f"{stack}/v1", api_key="unused", max_retries=0, timeout=120)


def v2_greedy(base, body):
    """Submit to /v2/tasks and read its SSE events: (text, token count, end event)."""
    req = urllib.request.Request(f"{base}/v2/tasks", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        task_id = json.load(r)["task_id"]
    text, n, end = "", 0, None
    with urllib.request.urlopen(f"{base}/v2/tasks/{task_id}/events", timeout=120) as r:
        for raw in r:
            line = raw.decode().rstrip("\n")
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            if ev["type"] == "token":
                text += ev["t"]
                n += 1
            elif ev["type"] in ("end", "error"):
                end = ev
                break
    return text, n, end


def test_models_lists_the_served_model_with_its_context_length(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_ID]
    assert models[0].context_length == 8192
    assert models[0].owned_by == "llama-orch"
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID


def test_non_streaming_chat_completion(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=12, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_usage_counts_equal_the_tokens_streamed(client):
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=MESSAGES, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content is not None]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finish in (["stop"], ["length"])
    assert usage.completion_tokens == len(content), "one chunk per generated token"
    blocking = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=16, temperature=0)
    assert "".join(content) == blocking.choices[0].message.content
    assert usage == blocking.usage


def test_temperature_zero_equals_the_v2_tasks_greedy_output(client, stack):
    r = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=20, temperature=0)
    text, n, end = v2_greedy(stack, {"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 20, "temperature": 0})
    assert end["type"] == "end"
    assert r.choices[0].message.content == text
    assert r.usage.completion_tokens == end["tokens_out"] == n
    assert r.usage.prompt_tokens == end["tokens_in"]

    c = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=8, temperature=0)
    text, _, end = v2_greedy(stack, {"model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 8,
                                     "temperature": 0})
    assert c.choices[0].text == text
    assert c.usage.completion_tokens == end["tokens_out"]
    streamed = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=8,
                                         temperature=0, stream=True)
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == text


def test_unknown_model_and_bad_fields_are_4xx_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    assert MODEL_ID in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, n=2)
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, temperature=5)
    assert e.value.param == "temperature"


def test_curl_streaming_ends_with_done(stack):
    curl = shutil.which("curl")
    if curl is None:
        if IN_CI:
            pytest.fail("curl not found (CI=true: missing prerequisites fail)")
        pytest.skip("curl not found")
    body = json.dumps({"model": MODEL_ID, "messages": MESSAGES, "max_tokens": 8, "stream": True})
    out = subprocess.run(
        [curl, "-sSN", "--max-time", "60", f"{stack}/v1/chat/completions", "-H", "content-type: application/json",
         "-d", body],
        capture_output=True, text=True, check=True,
    ).stdout
    data = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]", out
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
