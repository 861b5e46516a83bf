"""The OpenAI-compatible API of orchestratord, driven by the official `openai` package.

A real orchestratord and one real llorch-candled worker (SmolLM2-135M) are started for the
session. Run through scripts/test-openai.sh, which installs the package and fetches the model.
Environment: LLORCH_BIN_DIR (orchestratord, llorch-candled), LLORCH_TEST_MODEL (the GGUF).
"""

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import openai
import pytest

from stack import MODEL_ID, Stack, StackError

MESSAGES = [{"role": "user", "content": "Name three colors."}]
IN_CI = os.environ.get("CI") in ("true", "1")


@pytest.fixture(scope="session")
def stack():
    """orchestratord + one registered worker; yields the orchestrator's base URL."""
    s = Stack()
    try:
        try:
            s.start()
        except StackError as e:
            pytest.fail(str(e))
        yield s.base
    finally:
        s.stop()


@pytest.fixture(scope="session")
def client(stack):
    return openai.OpenAI(base_url=f"{stack}/v1", api_key="unused", max_retries=0, timeout=120)


def v2_events(base, body):
    """Submit to /v2/tasks and read its SSE events: (token events, end event)."""
    req = urllib.request.Request(f"{base}/v2/tasks", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        task_id = json.load(r)["task_id"]
    tokens, end = [], None
    with urllib.request.urlopen(f"{base}/v2/tasks/{task_id}/events", timeout=120) as r:
        for raw in r:
            line = raw.decode().rstrip("\n")
            if not line.startswith("data: "):
                continue
            ev = json.loads(line[6:])
            if ev["type"] == "token":
                tokens.append(ev)
            elif ev["type"] in ("end", "error"):
                end = ev
                break
    return tokens, end


def v2_greedy(base, body):
    """Submit to /v2/tasks and read its SSE events: (text, token count, end event)."""
    tokens, end = v2_events(base, body)
    return "".join(t["t"] for t in tokens), len(tokens), end


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


def test_logprobs_equal_the_workers_for_the_same_greedy_request(client, stack):
    msgs = [{"role": "user", "content": "Name a fruit."}]
    tokens, end = v2_events(stack, {"model": MODEL_ID, "messages": msgs, "max_tokens": 8, "temperature": 0,
                                    "logprobs": 3})
    assert end["type"] == "end" and len(tokens) == end["tokens_out"]
    worker = [t["logprob"] for t in tokens]

    def same(entries):
        assert len(entries) == len(worker)
        for e, w in zip(entries, worker):
            assert e.logprob == w["logprob"] and e.bytes == w.get("bytes", [])
            assert e.token == bytes(e.bytes).decode(errors="replace")
            assert [(t.logprob, t.bytes) for t in e.top_logprobs] == [
                (t["logprob"], t.get("bytes", [])) for t in w.get("top", [])]

    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=3)
    same(r.choices[0].logprobs.content)
    assert all(len(e.top_logprobs) == 3 for e in r.choices[0].logprobs.content)
    stream = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=8, temperature=0,
                                            logprobs=True, top_logprobs=3, stream=True)
    same([e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content])
    plain = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=8, temperature=0)
    assert plain.choices[0].logprobs is None

    prompt = "The capital of France is"
    tokens, _ = v2_events(stack, {"model": MODEL_ID, "prompt": prompt, "max_tokens": 6, "temperature": 0,
                                  "logprobs": 2})
    c = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert lp.token_logprobs == [t["logprob"]["logprob"] for t in tokens]
    assert lp.tokens == [bytes(t["logprob"].get("bytes", [])).decode(errors="replace") for t in tokens]
    assert all(len(top) <= 2 for top in lp.top_logprobs) and lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)


def test_n_choices(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    # Greedy choices are equal; the prompt is counted once, completion tokens summed.
    assert len({c.message.content for c in r.choices}) == 1
    one = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=0)
    assert r.choices[0].message.content == one.choices[0].message.content
    assert r.usage.prompt_tokens == one.usage.prompt_tokens
    assert r.usage.completion_tokens == 3 * one.usage.completion_tokens
    # Seeded: choice i uses seed + i, so choice 1 of seed 5 equals choice 0 of seed 6.
    a = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=1, seed=5,
                                       n=2)
    b = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=1, seed=6)
    assert a.choices[1].message.content == b.choices[0].message.content
    stream = client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=10, temperature=1, seed=5,
                                            n=2, stream=True, stream_options={"include_usage": True})
    texts, finish = ["", ""], [None, None]
    chunks = list(stream)
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            finish[c.index] = c.finish_reason or finish[c.index]
    assert texts == [c.message.content for c in a.choices] and None not in finish
    assert chunks[-1].usage == a.usage
    c = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=6, temperature=0, n=2)
    assert [x.index for x in c.choices] == [0, 1] and c.choices[0].text == c.choices[1].text


def test_unknown_model_and_bad_fields_are_4xx_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    assert MODEL_ID in e.value.message
    for n in (0, 9):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, n=n)
        assert e.value.param == "n" and e.value.code == "invalid_value"
        assert "between 1 and 8" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, logprobs=True, top_logprobs=21)
    assert e.value.param == "top_logprobs" and "between 0 and 20" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_ID, prompt="x", logprobs=21)
    assert e.value.param == "logprobs"
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


# Structured outputs and tool calling (constrained decoding on the worker).

import jsonschema  # noqa: E402

S = {"type": "string", "maxLength": 24}


def obj(props, required=None, **kw):
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False, **kw}


SCHEMAS = [
    ("Describe a cat.", obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 30}})),
    ("Name three colours.", obj({"colours": {"type": "array", "items": S, "minItems": 3, "maxItems": 3}})),
    ("Is the sky blue?", obj({"answer": {"enum": ["yes", "no"]}})),
    ("Give a temperature in Celsius.", obj({"celsius": {"type": "number", "minimum": -50, "maximum": 60}})),
    ("Describe a person and their address.",
     obj({"person": obj({"name": S, "address": obj({"city": S, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})})})),
    ("List two fruits with prices.",
     obj({"items": {"type": "array", "minItems": 2, "maxItems": 2,
                    "items": obj({"fruit": S, "price": {"type": "number", "minimum": 0, "maximum": 100}})}})),
    ("Is water wet? Say true or false.", obj({"wet": {"type": "boolean"}})),
    ("Describe a book.", obj({"title": S, "author": S, "year": {"type": "integer", "minimum": 1000, "maximum": 2030}},
                             required=["title"])),
    ("Pick a size.", obj({"size": {"enum": ["small", "medium", "large"]}, "count": {"type": "integer", "minimum": 1,
                                                                                  "maximum": 9}})),
    ("Rate a movie from 1 to 5.", obj({"movie": S, "stars": {"type": "integer", "minimum": 1, "maximum": 5}})),
    ("Give a point in 2D.", obj({"x": {"type": "number", "minimum": -10, "maximum": 10},
                                 "y": {"type": "number", "minimum": -10, "maximum": 10}})),
    ("List up to four animals.", obj({"animals": {"type": "array", "items": S, "minItems": 1, "maxItems": 4}})),
    ("Describe a car.", obj({"make": S, "model": S, "electric": {"type": "boolean"}})),
    ("Give a weekday.", obj({"day": {"enum": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                                              "Sunday"]}})),
    ("Describe a city.", obj({"city": S, "country": S, "population": {"type": "integer", "minimum": 0,
                                                                        "maximum": 50000000}})),
    ("Give a colour in RGB.", obj({"rgb": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255},
                                           "minItems": 3, "maxItems": 3}})),
    ("Make a to-do item.", obj({"task": S, "done": {"type": "boolean"},
                                "tags": {"type": "array", "items": S, "maxItems": 2}}, required=["task", "done"])),
    ("Give a phone number.", obj({"phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"}})),
    ("Describe the weather.", obj({"summary": S, "wind": obj({"speed": {"type": "number", "minimum": 0,
                                                                         "maximum": 200},
                                                               "direction": {"enum": ["N", "E", "S", "W"]}})})),
    ("Give a user profile.", obj({"user": obj({"id": {"type": "integer", "minimum": 1, "maximum": 9999},
                                               "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"},
                                               "admin": {"type": "boolean"}})})),
]


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}


def test_twenty_json_schemas_validate_streaming_and_not(client):
    assert len(SCHEMAS) == 20
    for i, (q, schema) in enumerate(SCHEMAS):
        msgs = [{"role": "user", "content": q + " Answer in JSON."}]
        r = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=200, temperature=0,
                                           response_format=schema_format(schema))
        assert r.choices[0].finish_reason == "stop", (i, r.choices[0].message.content)
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)
        stream = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=200, temperature=0.7,
                                                seed=i, stream=True, response_format=schema_format(schema))
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["stop"], (i, text)
        jsonschema.validate(json.loads(text), schema)


def test_twenty_json_schemas_validate_with_n_4(client):
    """n=4 sampled choices per schema: streamed for odd schemas, one body for even ones."""
    for i, (q, schema) in enumerate(SCHEMAS):
        msgs = [{"role": "user", "content": q + " Answer in JSON."}]
        kw = dict(model=MODEL_ID, messages=msgs, max_tokens=200, temperature=0.7, seed=100 + i, n=4,
                  response_format=schema_format(schema))
        if i % 2:
            texts, finish = [""] * 4, [None] * 4
            for ch in client.chat.completions.create(stream=True, **kw):
                for c in ch.choices:
                    texts[c.index] += c.delta.content or ""
                    finish[c.index] = c.finish_reason or finish[c.index]
        else:
            r = client.chat.completions.create(**kw)
            texts = [c.message.content for c in r.choices]
            finish = [c.finish_reason for c in r.choices]
            assert [c.index for c in r.choices] == [0, 1, 2, 3]
        assert finish == ["stop"] * 4, (i, texts)
        for text in texts:
            jsonschema.validate(json.loads(text), schema)


def test_json_object_mode(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Describe a dog."}],
                                       max_tokens=200, temperature=0, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": obj({"city": S, "unit": {"enum": ["celsius", "fahrenheit"]}})}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": obj({"zone": S})}}


def check_calls(r, allowed):
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in allowed}
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), by_name[call.function.name])
    return choice.message.tool_calls


def test_named_and_required_tool_calls_have_valid_arguments(client):
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL_ID, messages=msgs, tools=[WEATHER, TIME], max_tokens=120, temperature=0.8, seed=seed,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        calls = check_calls(r, [WEATHER])
        assert [c.function.name for c in calls] == ["get_weather"]
        r = client.chat.completions.create(model=MODEL_ID, messages=msgs, tools=[WEATHER, TIME], max_tokens=160,
                                           temperature=0.8, seed=seed, tool_choice="required",
                                           parallel_tool_calls=False)
        assert len(check_calls(r, [WEATHER, TIME])) == 1
    # Streamed: the call arrives as tool-call deltas.
    stream = client.chat.completions.create(model=MODEL_ID, messages=msgs, tools=[WEATHER], max_tokens=120,
                                            temperature=0, tool_choice="required", stream=True)
    chunks = list(stream)
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"] and deltas
    assert deltas[0].function.name == "get_weather" and deltas[0].id.startswith("call_")
    jsonschema.validate(json.loads(deltas[0].function.arguments), WEATHER["function"]["parameters"])


def test_auto_and_a_multi_turn_exchange_with_a_tool_result(client):
    # SmolLM2-135M answers in prose under `auto` unless the conversation shows one call: so an
    # earlier exchange (call, tool result, answer) comes first, all through the /v1 message shapes.
    msgs = [{"role": "system", "content": "Use the tools when they help."},
            {"role": "user", "content": "What is the weather in Rome?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": "Rome", "unit": "celsius"})}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "20 degrees, cloudy"},
            {"role": "assistant", "content": "It is 20 degrees and cloudy in Rome."},
            {"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, tools=[WEATHER, TIME], max_tokens=120,
                                       temperature=0)
    # The question matches a tool: the model chooses to call it (greedy, so always), with Paris.
    call = check_calls(r, [WEATHER, TIME])[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
    call_id, args = call.id, call.function.arguments
    msgs += [{"role": "assistant", "content": None, "tool_calls": [
                 {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
             {"role": "tool", "tool_call_id": call_id, "content": "18 degrees, sunny"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, tools=[WEATHER], tool_choice="none",
                                       max_tokens=40, temperature=0)
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")


def test_bad_schemas_and_unknown_tools_are_400_in_openai_shape(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, response_format=schema_format(
            {"type": "object", "properties": {"a": {"type": "integr"}}}))
    assert e.value.param == "response_format.json_schema.schema#/properties/a/type"
    assert e.value.code == "invalid_value" and "integr" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, n=9)
    assert e.value.param == "n"


def test_v2_tasks_constraint_and_its_400(stack):
    text, _, end = v2_greedy(stack, {"model": MODEL_ID, "messages": [{"role": "user", "content": "A number?"}],
                                     "max_tokens": 16, "temperature": 0, "constraint": {"regex": "[0-9]{2,4}"}})
    assert end["type"] == "end" and end["stop_reason"] == "eos"
    assert text.isdigit() and 2 <= len(text) <= 4, text
    req = urllib.request.Request(f"{stack}/v2/tasks", headers={"content-type": "application/json"}, data=json.dumps(
        {"model": MODEL_ID, "prompt": "x", "constraint": {"json_schema": {"type": "object", "properties": {
            "a": {"type": "array", "uniqueItems": True}}}}}).encode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400
    field = json.load(e.value)["error"]["fields"][0]
    assert field["field"] == "constraint.json_schema#/properties/a/uniqueItems", field
