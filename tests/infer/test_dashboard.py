"""The sampler dashboard: request validation, a live server that survives bad requests and bounds
concurrency, and the page driven in a real headless Chromium (Playwright)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jax
import numpy as np
import pytest

from lab.data.tokenize import ByteTokenizer
from lab.infer import dashboard as D
from lab.infer.load import TextModel
from lab.infer.sampler import sample_trace
from lab.model import PRESETS, init


@pytest.fixture(scope="module")
def model():
    cfg = PRESETS["smoke"].replace(vocab_size=256, max_len=32)
    return TextModel(cfg, init(cfg, jax.random.PRNGKey(0)), ByteTokenizer(), Path("."), 0, "test model")


@pytest.fixture(scope="module")
def server(model):
    srv = D.make_server(model, "127.0.0.1", 0, max_new=64, max_concurrent=1)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def post(url: str, body, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + "/api/generate", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


GOOD = {"prompt": "def f(", "temperature": 0.8, "top_k": 20, "top_p": 0.9, "min_p": 0.02,
        "repetition_penalty": 1.1, "seed": 3, "max_tokens": 12}  # fmt: skip


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"temperature": -0.1}, "temperature must be a number in [0, 10]"),
        ({"top_p": 0.0}, "top_p must be a number in (0, 1]"),
        ({"top_p": 1.5}, "top_p must be a number in (0, 1]"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"min_p": "a lot"}, "min_p must be a number"),
        ({"max_tokens": 10_000}, "max_tokens must be an integer in [1, 64]"),
        ({"seed": True}, "seed must be an integer"),
        ({"prompt": 5}, "prompt must be a string"),
        ({"temp": 1.0}, "unknown field 'temp'"),
    ],
)
def test_bad_requests_get_400_and_the_server_keeps_serving(server, change, fragment):
    _, url = server
    status, body = post(url, {**GOOD, **change})
    assert status == 400 and fragment in body["error"]
    status, body = post(url, GOOD)
    assert status == 200 and len(body["tokens"]) == 12


def test_bad_json_and_oversized_bodies(server):
    _, url = server
    assert post(url, None, raw=b"{not json")[0] == 400
    status, body = post(url, None, raw=b"[1, 2]")
    assert status == 400 and "JSON object" in body["error"]
    status, body = post(url, None, raw=b" " * (D.MAX_BODY + 1))
    assert status == 400 and "Content-Length" in body["error"]
    with urllib.request.urlopen(url + "/api/info", timeout=10) as r:
        assert json.loads(r.read())["max_tokens"] == 64


def test_generation_response_is_consistent(server):
    _, url = server
    status, body = post(url, {**GOOD, "temperature": 0.0, "max_tokens": 20})
    assert status == 200
    for t in body["tokens"]:
        assert (
            t["prob"] == pytest.approx(1.0)
            and t["kept"] == 1
            and t["entropy_after"] == pytest.approx(0, abs=1e-5)
        )
        assert abs(sum(x["before"] for x in t["top"]) - 1) < 1 + 1e-6
    again = post(url, {**GOOD, "temperature": 0.0, "max_tokens": 20, "seed": 99})[1]
    assert [t["id"] for t in again["tokens"]] == [t["id"] for t in body["tokens"]]  # greedy ignores the seed
    s = body["stats"]
    assert 0 < s["distinct_1"] <= 1 and s["prompt_tokens"] == len("def f(")


def test_tokens_past_the_context_are_those_of_the_recompute(server, model):
    """The dashboard decodes through the KV cache (and a recomputed window past the context): the tokens
    are those of the plain recompute with the same seed and knobs."""
    _, url = server
    status, body = post(url, {**GOOD, "max_tokens": 60})  # 6 prompt tokens + 60 > the context of 32
    assert status == 200
    knobs = {k: GOOD[k] for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")}
    want = sample_trace(model.cfg, model.params, np.array([list(b"def f(")]), 60, knobs, seed=3, max_new=64,
                        cached=False)  # fmt: skip
    assert [t["id"] for t in body["tokens"]] == want["tokens"][0].tolist()
    assert [t["kept"] for t in body["tokens"]] == want["kept"][0].tolist()


def test_concurrency_is_bounded(server, monkeypatch):
    _, url = server
    gate = threading.Event()
    real = D.generate_response

    def slow(*a, **k):
        gate.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(D, "generate_response", slow)
    first = {}
    t = threading.Thread(target=lambda: first.update(r=post(url, GOOD)))
    t.start()
    time.sleep(0.5)
    status, body = post(url, GOOD)  # max_concurrent=1 and one is running
    gate.set()
    t.join(60)
    assert status == 429 and "busy" in body["error"]
    assert first["r"][0] == 200


def _chromium() -> str | None:
    return os.environ.get("LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _skip_or_fail(reason: str):
    if os.environ.get("LAB_REQUIRE_BROWSER"):  # set by .ci/run: in CI the browser test must run
        pytest.fail(f"LAB_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


def test_page_in_a_real_browser(server):
    if os.environ.get("LAB_NO_BROWSER"):
        _skip_or_fail("LAB_NO_BROWSER is set (./lab.sh test then installs no Chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (it is in the test extras: pip install -e .[test])")
    exe = _chromium()
    if exe is None:
        _skip_or_fail("no Chromium found: ./lab.sh test installs Debian's chromium when run as root; "
                      "elsewhere install it or set LAB_CHROMIUM=/path/to/chromium")  # fmt: skip
    _, url = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function(
                "document.getElementById('status').dataset.requests === '1'", timeout=60_000
            )
            first = page.inner_text("#output")
            assert page.locator("#output .tok").count() > 0
            assert page.locator("#bars rect.before").count() == 10
            assert "distinct-1" in page.inner_text("#stats")
            # move two sliders as a person would (input events), and see the output change
            for knob, value in (("temperature", "1.9"), ("seed", "42")):
                page.eval_on_selector(
                    f"#{knob}", "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value
                )
            page.wait_for_function(
                "Number(document.getElementById('status').dataset.requests) >= 2", timeout=60_000
            )
            page.wait_for_timeout(500)
            page.wait_for_function("!document.getElementById('status').textContent.startsWith('generating')")
            assert page.inner_text("#temperature_v") == "1.9"
            assert page.inner_text("#output") != first
            page.locator("#output .tok").nth(2).click()
            assert "step 3" in page.inner_text("#bars_title")
        finally:
            browser.close()


def strict_json(raw: bytes):
    """JSON as a browser's JSON.parse reads it: NaN and Infinity are errors."""

    def refuse(name):
        raise ValueError(f"{name} in the response")

    return json.loads(raw, parse_constant=refuse)


def post_raw(url: str, raw: bytes):
    """(status, body parsed strictly) for a POST of the bytes `raw`."""
    conn = http.client.HTTPConnection(url.split("//")[1], timeout=60)
    try:
        conn.request("POST", "/api/generate", body=raw, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, strict_json(r.read())
    finally:
        conn.close()


@pytest.mark.parametrize("knob", ["repetition_penalty", "top_p", "temperature", "min_p"])
def test_knob_values_that_underflow_float32_are_refused(server, knob):
    """1e-300 is 0 in float32: top_p 0 kept no token and a penalty of 0 divided by zero, so the reply
    carried NaN. Such values are refused; the smallest allowed one gives finite numbers throughout."""
    _, url = server
    status, body = post_raw(url, json.dumps({**GOOD, knob: 1e-300, "max_tokens": 4}).encode())
    assert status == 400 and f"{knob} must be a number in" in body["error"] and "float32" in body["error"]
    status, body = post_raw(url, json.dumps({**GOOD, knob: D.MIN_POSITIVE, "max_tokens": 4}).encode())
    assert status == 200 and len(body["tokens"]) == 4
    for t in body["tokens"]:
        values = [
            t["prob"],
            t["entropy_before"],
            t["entropy_after"],
            *(x[k] for x in t["top"] for k in ("before", "after")),
        ]
        assert all(isinstance(v, float | int) and np.isfinite(v) for v in values), t


def test_non_finite_numbers_reach_the_page_as_null(server, monkeypatch):
    _, url = server
    monkeypatch.setattr(D, "generate_response", lambda *a, **k: {"tokens": [{"prob": float("nan")}],
                                                                 "stats": {"x": float("-inf"), "y": 1.5}})  # fmt: skip
    status, body = post_raw(url, json.dumps(GOOD).encode())
    assert status == 200 and body == {"tokens": [{"prob": None}], "stats": {"x": None, "y": 1.5}}


HOSTILE = [
    (b'{"seed": ' + b"1" * 5000 + b"}", "a number too long to read"),
    (b"[" * 32000 + b"]" * 32000, "nests 32000 arrays/objects deep"),
    (b'{"prompt": ' + b"{" * 40 + b"}", "nests 41 arrays/objects deep"),
    (b'{"prompt": "\\ud800"}', "prompt must be valid Unicode text: it has a lone surrogate U+D800"),
    (b'{"top_p": NaN}', "NaN is not a JSON number"),
    (b'{"temperature": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"temperature": 1e999}', "temperature must be a number in [0, 10]"),
    (b'{"prompt": "a"}\xff', "not UTF-8 (byte 0xff at offset 15)"),
    (b'{"prompt": "a",}', "not valid JSON"),
]


def test_hostile_bodies_get_400_naming_the_problem_and_the_server_keeps_serving(server):
    _, url = server
    for raw, fragment in HOSTILE:
        status, body = post_raw(url, raw)
        assert status == 400 and fragment in body["error"], (raw[:40], body)
    # errors the standard library finds in the request line and headers are JSON like ours, with a status
    # line even where the request line names no (valid) HTTP version: HTTP/0.9's bare body would be no 4xx
    for raw, want in (
        (b"NONSENSE\r\n\r\n", b"HTTP/1.0 400"),
        (b"POST /api/generate HTTP/1.x\r\n\r\n", b"HTTP/1.0 400"),
        (b"POST /api/generate HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"HTTP/1.0 431"),
    ):
        with socket.create_connection(("127.0.0.1", server[0].server_port), timeout=10) as s:
            s.sendall(raw)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(want) and b'{"error": ' in reply, reply
    # brackets inside a string are text, not nesting
    status, body = post_raw(url, json.dumps({**GOOD, "prompt": "[" * 100, "max_tokens": 3}).encode())
    assert status == 200 and len(body["tokens"]) == 3
    status, body = post(url, GOOD)
    assert status == 200 and len(body["tokens"]) == 12


def test_a_hundred_clients_at_once_all_get_an_answer(server, monkeypatch):
    """The listen backlog holds them all (socketserver's default of 5 reset some); the one slot
    (max_concurrent=1) serves one and the rest get 429s, every client an HTTP status."""
    _, url = server

    def fast(*a, **k):
        time.sleep(0.2)
        return {"tokens": [], "stats": {}}

    monkeypatch.setattr(D, "generate_response", fast)
    n, results = 100, [None] * 100
    start = threading.Barrier(n)

    def client(i):
        start.wait()
        try:
            results[i] = post_raw(url, json.dumps(GOOD).encode())[0]
        except Exception as e:  # a reset or a refused connection
            results[i] = repr(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(r in (200, 429) for r in results), [r for r in results if r not in (200, 429)][:5]
    assert results.count(200) >= 1 and results.count(429) >= 1


def test_clients_that_never_finish_sending_are_timed_out(model, monkeypatch):
    """50 connections that stall mid-request are answered 408 and closed after request_timeout, and the
    server serves others meanwhile."""
    monkeypatch.setattr(D, "generate_response", lambda *a, **k: {"tokens": [{"id": 1}] * 2, "stats": {}})
    srv = D.make_server(model, "127.0.0.1", 0, max_new=8, max_concurrent=1, request_timeout=1.0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}"
    stalled = []
    try:
        t0 = time.monotonic()
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", srv.server_port), timeout=10)
            if i % 2:  # headers cut short
                s.sendall(b"POST /api/generate HTTP/1.1\r\nContent-Le")
            else:  # a body shorter than its Content-Length
                s.sendall(b'POST /api/generate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"prompt":')
            stalled.append(s)
        status, body = post(url, {**GOOD, "max_tokens": 2})
        assert status == 200 and len(body["tokens"]) == 2
        for s in stalled:
            reply = b""
            while chunk := s.recv(65536):  # a connection left open raises socket.timeout after 10 s
                reply += chunk
            assert reply.startswith(b"HTTP/1.0 408") and b"not sent within 1 s" in reply, reply[:80]
        assert time.monotonic() - t0 < 8
        status, body = post(url, {**GOOD, "max_tokens": 2})
        assert status == 200
    finally:
        for s in stalled:
            s.close()
        srv.shutdown()
        srv.server_close()
