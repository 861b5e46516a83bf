"""The web dashboard (GET /ui) in a real headless Chromium: Debian's `chromium` driven by
Playwright for Python (the system browser; Playwright's own browsers are never downloaded)
against a real orchestratord with an API token and a real llorch-candled worker (SmolLM2).

Run through scripts/test-dashboard.sh. Environment: LLORCH_CHROMIUM (the browser),
LLORCH_DASHBOARD_ARTIFACTS (screenshots), and what tests/python/stack.py reads. Every test fails
on any browser console error or uncaught page error.
"""

import json
import os
import re
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from stack import MODEL_ID, Stack

TOKEN = "dashboard-test-token-0123456789"
WORKER = "dash-worker"
ART = os.environ.get("LLORCH_DASHBOARD_ARTIFACTS", "target/dashboard-artifacts")
# A long answer, so the stream is still running when the mid-stream screenshot is taken.
PROMPT = "Write a long story about a lighthouse keeper and a storm."
MAX_TOKENS = 200
SLOW = 120_000  # ms: generous bounds for a loaded 2-core machine


@pytest.fixture(scope="session")
def stack():
    s = Stack(token=TOKEN, worker_id=WORKER)
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    exe = os.environ.get("LLORCH_CHROMIUM") or shutil.which("chromium")
    assert exe, "no chromium: run scripts/test-dashboard.sh"
    os.makedirs(ART, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    errors = []
    pg.on("console", lambda m: errors.append(f"console.error: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    yield pg
    ctx.close()
    assert not errors, "browser console errors:\n" + "\n".join(errors)


def sign_in(page, stack):
    page.goto(f"{stack.base}/ui")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-token", TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#view-overview")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("live", timeout=SLOW)


def test_playground_json_schema_answers_match_the_schema(page, stack):
    sign_in(page, stack)
    page.click("a[data-nav=playground]")
    expect(page.locator("#pg-model option")).to_have_count(1)
    page.select_option("#pg-format", "json_schema")
    expect(page.locator("#pg-schema")).to_be_visible()
    page.fill("#pg-schema", '{"type":"object","properties":{"color":{"type":"string","maxLength":20}},'
                            '"required":["color"],"additionalProperties":false}')
    page.fill("#pg-max", "64")
    page.fill("#pg-input", "Name a color.")
    page.click("#pg-send")
    expect(page.locator("#pg-log")).to_have_attribute("data-state", "done", timeout=SLOW)
    answer = json.loads(page.locator(".msg.assistant .text").last.text_content())
    assert list(answer) == ["color"] and isinstance(answer["color"], str), answer
    # A schema that is not JSON is refused in the page, before any request.
    page.fill("#pg-schema", "{not json")
    page.fill("#pg-input", "again")
    page.click("#pg-send")
    expect(page.locator("#pg-error")).to_contain_text("not valid JSON")


def submit_long(stack, seed):
    """A task that runs for a while (a raw prompt rarely ends early at temperature 0.8)."""
    status, accepted = stack.call("/v2/tasks", {
        "model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 2000,
        "temperature": 0.8, "seed": seed,
    })
    assert status == 202, accepted
    return accepted["task_id"]


def test_without_a_token_the_page_shows_no_data(page, stack):
    data_calls = []
    page.on("request", lambda r: data_calls.append(r.url) if re.search(r"/v[12]/", r.url) else None)
    page.goto(f"{stack.base}/ui")
    expect(page.locator("#login")).to_be_visible()
    # Two sample intervals: anything the page would fetch or receive has had time to arrive.
    page.wait_for_timeout(4500)
    for view in ("overview", "tasks", "task", "models", "playground"):
        expect(page.locator(f"#view-{view}")).to_be_hidden()
    body = page.text_content("body")
    assert WORKER not in body and MODEL_ID not in body
    assert data_calls == [], f"the page called the API without a token: {data_calls}"
    assert page.evaluate("sessionStorage.length") == 0
    # The stream itself refuses without the token.
    assert stack.call("/v2/dashboard/stream", token="wrong-token-000000000000")[0] == 401


def test_playground_streams_the_greedy_answer(page, stack):
    sign_in(page, stack)
    page.click("a[data-nav=playground]")
    expect(page.locator("#pg-model option")).to_have_count(1)
    page.fill("#pg-temp", "0")
    page.fill("#pg-max", str(MAX_TOKENS))
    page.fill("#pg-seed", "7")
    page.fill("#pg-input", PROMPT)
    page.keyboard.press("Control+Enter")
    answer = page.locator(".msg.assistant .text").last
    page.wait_for_function(
        "() => { const t = document.querySelectorAll('.msg.assistant .text');"
        " return t.length && t[t.length - 1].textContent.length > 0; }",
        timeout=SLOW,
    )
    state = page.get_attribute("#pg-log", "data-state")
    page.screenshot(path=f"{ART}/playground-midstream.png")
    print(f"playground screenshot taken with the stream {state}")
    expect(page.locator("#pg-log")).to_have_attribute("data-state", "done", timeout=SLOW)
    streamed = answer.text_content()
    status, api = stack.call("/v1/chat/completions", {
        "model": MODEL_ID, "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0, "max_tokens": MAX_TOKENS, "seed": 7,
    }, timeout=SLOW / 1000)
    assert status == 200, api
    assert streamed == api["choices"][0]["message"]["content"]
    expect(page.locator("#pg-out")).to_have_text(str(api["usage"]["completion_tokens"]))
    expect(page.locator("#pg-ttft")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.locator("#pg-cached")).to_have_text(re.compile(r"^\d+$"))
    page.screenshot(path=f"{ART}/playground-done.png")


def test_a_task_cancelled_from_its_page_ends_cancelled(page, stack):
    task_id = submit_long(stack, seed=1)
    sign_in(page, stack)
    page.click("a[data-nav=tasks]")
    link = page.locator(f"#tasks-table a[href='#/tasks/{task_id}']")
    expect(link).to_be_visible(timeout=SLOW)
    link.click()
    expect(page.locator("#task-state")).to_have_text("running", timeout=SLOW)
    expect(page.locator("#task-output")).not_to_be_empty()
    page.screenshot(path=f"{ART}/task-running.png", full_page=True)
    page.click("#task-cancel")
    expect(page.locator("#task-state")).to_have_text("cancelled", timeout=SLOW)
    expect(page.locator("#task-events")).to_contain_text("end: cancelled")
    page.screenshot(path=f"{ART}/task-cancelled.png", full_page=True)
    assert stack.call(f"/v2/tasks/{task_id}")[1]["state"] == "cancelled"


def test_leaving_a_task_page_does_not_cancel_the_task(page, stack):
    task_id = submit_long(stack, seed=2)
    sign_in(page, stack)
    page.goto(f"{stack.base}/ui#/tasks/{task_id}")
    expect(page.locator("#task-state")).to_have_text("running", timeout=SLOW)
    page.click("a[data-nav=overview]")
    # Well past the disconnect grace period (2 s): an observer's leaving cancels nothing.
    page.wait_for_timeout(4000)
    assert stack.call(f"/v2/tasks/{task_id}")[1]["state"] == "running"
    assert stack.call(f"/v2/tasks/{task_id}/cancel", method="POST")[0] == 204


def test_overview_lists_the_worker(page, stack):
    sign_in(page, stack)
    assert TOKEN not in page.url
    row = page.locator("#ov-workers-table tbody tr", has_text=WORKER)
    expect(row).to_be_visible()
    expect(row).to_contain_text(MODEL_ID)
    expect(row.locator(".badge")).to_have_text(re.compile("^(ready|busy)$"))
    expect(page.locator("#ov-workers")).to_have_text("1 / 1")
    # Runs after the playground and task tests, so the charts show their tokens and TTFT.
    page.wait_for_timeout(2500)
    page.screenshot(path=f"{ART}/overview.png", full_page=True)
    # Phone width: nothing wider than the screen (tables scroll inside their own box).
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=f"{ART}/overview-phone.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.click("a[data-nav=models]")
    served = page.locator("#models-table tbody tr", has_text=MODEL_ID)
    expect(served).to_contain_text(WORKER)
