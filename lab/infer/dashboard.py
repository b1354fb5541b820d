"""The sampler dashboard: a small HTTP server (standard library only) and one self-contained page.

    lab dashboard [--checkpoint RUN_DIR] [--member 0] [--port 8765] [--host 127.0.0.1]

GET  /              the page (HTML, CSS and JavaScript inline: works offline, no CDN)
GET  /api/info      the model being served (its description and a note) and the request limits
POST /api/generate  {"prompt": str, one field per knob of the sampler table (today "repetition_penalty",
                     "temperature", "top_k", "top_p", "min_p"), "seed": int, "max_tokens": int}
                    -> {"tokens": [{"id", "text", "prob", "entropy_before", "entropy_after", "kept",
                        "top": [{"id", "text", "before", "after"}]}], "stats": {...}}

The knob fields, their checks and the page's sliders all come from the sampler table
(lab.ops.sampling.SAMPLERS, or the `table` given to `make_server`). Generation decodes with the KV cache
while the sequence fits the model's context and recomputes a sliding window past it (lab.infer.sampler).

Every field is checked (type and range, unknown fields refused); a bad request gets a 400 with a JSON
{"error": "..."} naming the field and what is allowed, and the server keeps serving. The prompt and body
are bounded in size, `max_tokens` by the server's limit, and at most `max_concurrent` generations run at
once (others get a 429 and can retry). The server binds 127.0.0.1 unless another host is asked for.
Hostile bodies are 400s too: over-long numbers, arrays nested past MAX_DEPTH, NaN/Infinity, bytes that are
not UTF-8, a prompt with a lone surrogate, knob values so small that float32 rounds them to 0 (which made
NaN); no reply carries NaN or Infinity (they become null). A client silent for `request_timeout` seconds
mid-request gets a 408 and is disconnected; the listen backlog holds `backlog` clients connecting at once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from lab.infer.dashboard_page import page
from lab.infer.diversity import distinct_n, loop, repeated_ngram_fraction
from lab.infer.load import TextModel
from lab.infer.sampler import sample_trace
from lab.ops.sampling import SAMPLERS
from lab.tokenizer import PieceDecoder

MAX_BODY = 64 * 1024  # bytes of request JSON
MAX_PROMPT_CHARS = 4000
MAX_DEPTH = 32  # nesting of arrays and objects in a request body (a valid one nests 1 deep)
# The sampler computes in float32, where 1e-300 is 0 (and anything under ~1.2e-38 is flushed to 0 on XLA's
# CPU): top_p 0 keeps no token and a repetition penalty of 0 divides by zero, and both end in NaN. A positive
# knob value must therefore be at least MIN_POSITIVE, which float32 holds exactly enough and whose
# reciprocal (the penalty's and the temperature's factor on the logits, at most 1e6) keeps any sane logit
# far from float32's overflow at 3.4e38.
MIN_POSITIVE = 1e-6
REQUEST_TIMEOUT = 10.0  # seconds a client may stay silent while sending a request (then 408 and close)
BACKLOG = 128  # the listen queue: clients that connect at once wait here instead of being reset


class BadRequest(ValueError):
    pass


def _number(
    body: dict, name: str, default, lo: float, hi: float, integer: bool = False, lo_open: bool = False
):
    value = body.get(name, default)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise BadRequest(f"{name} must be {kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        raise BadRequest(f"{name} must be {kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")
    if not integer and 0 < abs(value) < MIN_POSITIVE:
        allowed = (
            f"[{MIN_POSITIVE:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}], 0 or at least {MIN_POSITIVE:g}"
        )
        raise BadRequest(
            f"{name} must be {kind} in {allowed} (smaller positive values underflow the sampler's float32 "
            f"arithmetic), got {value!r}"
        )
    return value


def _depth(text: str) -> int:
    """How deeply the arrays and objects of JSON `text` nest (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str):
    raise BadRequest(f"the request body is not valid JSON: {name} is not a JSON number")


def finite(obj):
    """`obj` with every float that is NaN or infinite replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def fields(table=SAMPLERS) -> tuple[str, ...]:
    return ("prompt", *(k.name for k in table), "seed", "max_tokens")


def parse_request(raw: bytes, vocab_size: int, max_new: int, table=SAMPLERS):
    """(prompt, knobs {name: value}, seed, max_tokens) from a request body, or BadRequest naming the problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"the request body is not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})"
        ) from None
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise BadRequest(
            f"the request body nests {depth} arrays/objects deep; at most {MAX_DEPTH} are allowed"
        )
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise BadRequest(f"the request body is not valid JSON ({e})") from None
    except BadRequest:
        raise
    except ValueError as e:  # Python reads integers of at most sys.get_int_max_str_digits() (4300) digits
        raise BadRequest(f"the request body has a number too long to read ({str(e).split(';')[0]})") from None
    except RecursionError:  # not reached after the depth check; kept so no parser error escapes
        raise BadRequest("the request body nests too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - set(fields(table)))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; allowed: {', '.join(fields(table))}")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise BadRequest(f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON's "\\ud800" escape decodes to a lone surrogate
        raise BadRequest(
            f"prompt must be valid Unicode text: it has a lone surrogate U+{ord(prompt[e.start]):04X} at "
            f"character {e.start} (a surrogate must be half of a pair)"
        ) from None
    knobs = {
        k.name: _number(body, k.name, k.neutral, k.valid[0], vocab_size if k.valid[1] is None else k.valid[1],
                        integer=k.integer, lo_open=k.lo_open)
        for k in table
    }  # fmt: skip
    seed = _number(body, "seed", 0, 0, 2**31 - 1, integer=True)
    max_tokens = _number(body, "max_tokens", min(64, max_new), 1, max_new, integer=True)
    return prompt, knobs, seed, max_tokens


def generate_response(
    model: TextModel, prompt: str, knobs: dict, seed: int, n: int, max_new: int, table=SAMPLERS
):
    ids = model.tokenizer.encode(prompt).tolist() if prompt else []
    if not ids:
        ids = model.tokenizer.encode("\n").tolist()  # an empty prompt starts from a newline
    t0 = time.perf_counter()
    rec = sample_trace(
        model.cfg, model.params, np.array([ids]), n, knobs, seed=seed, max_new=max_new, top_n=10, table=table
    )
    ms = (time.perf_counter() - t0) * 1e3
    toks = rec["tokens"][0].tolist()
    dec = PieceDecoder(model.tokenizer.token_bytes, context=ids)
    out = []
    for i, tok in enumerate(toks):
        top = [
            {"id": int(j), "text": dec.peek(j), "before": float(b), "after": float(a)}
            for j, b, a in zip(rec["top_ids"][0, i], rec["top_before"][0, i], rec["top_after"][0, i])
        ]
        out.append({
            "id": tok, "text": dec.next(tok), "prob": float(rec["prob"][0, i]),
            "entropy_before": float(rec["entropy_before"][0, i]), "entropy_after": float(rec["entropy_after"][0, i]),
            "kept": int(rec["kept"][0, i]), "top": top,
        })  # fmt: skip
    lp = loop(toks)
    stats = {
        "distinct_1": distinct_n([toks], 1),
        "distinct_2": distinct_n([toks], 2),
        "repeated_4gram_fraction": repeated_ngram_fraction(toks, 4),
        "mean_entropy_after": float(np.mean(rec["entropy_after"][0])) if toks else 0.0,
        "loop_period": lp[0] if lp else None,
        "loop_start": lp[1] if lp else None,
        "prompt_tokens": len(ids),
        "milliseconds": ms,
    }
    return finite({"tokens": out, "stats": stats})


def make_server(model: TextModel, host: str = "127.0.0.1", port: int = 8765, max_new: int = 256,
                max_concurrent: int = 2, table=SAMPLERS, note: str = "", prompt: str = "def ",
                request_timeout: float = REQUEST_TIMEOUT, backlog: int = BACKLOG) -> ThreadingHTTPServer:  # fmt: skip
    """A server for `model` with the knobs of `table` (call .serve_forever(); port 0 picks a free port,
    see .server_port). `note`, if given, is shown on the page under the model's description (the CLI says
    there what the default model is and how to serve a better one); `prompt` is the page's first prompt.

    A client that stays silent for `request_timeout` seconds while sending its request gets a 408 and its
    connection is closed (each connection has its own thread, so others are served meanwhile); `backlog`
    connections may wait to be accepted at once (over `max_concurrent`, they get a 429, never a reset)."""
    slots = threading.BoundedSemaphore(max_concurrent)
    html_page = page(table, model.description, note, prompt).encode("utf-8")
    info = {
        "model": model.description,
        "note": note,
        "vocab_size": model.cfg.vocab_size,
        "context": model.cfg.max_len,
        "max_tokens": max_new,
        "max_concurrent": max_concurrent,
        "max_prompt_chars": MAX_PROMPT_CHARS,
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "lab-dashboard"
        # A malformed request line leaves request_version at this default, and under "HTTP/0.9" the
        # standard library sends an error's body with no status line or headers at all.
        default_request_version = "HTTP/1.0"
        timeout = request_timeout  # StreamRequestHandler.setup puts it on the socket: every read and write
        _replied = False

        def handle_one_request(self):
            # The standard library's, except that a request that times out gets a 408 (if nothing has been
            # sent yet) before its connection is closed; the standard one closes without a word.
            self._replied = False
            # What a reply needs before a request line has been read (parse_request sets them): a client
            # silent from the start still gets its 408 with a status line, not an AttributeError.
            self.requestline, self.request_version, self.command = "", self.default_request_version, ""
            try:
                self.raw_requestline = self.rfile.readline(65537)
                if len(self.raw_requestline) > 65536:
                    self.requestline = self.request_version = self.command = ""
                    self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                    return
                if not self.raw_requestline:
                    self.close_connection = True
                    return
                if not self.parse_request():  # it has sent the error
                    return
                method = getattr(self, "do_" + self.command, None)
                if method is None:
                    self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command!r} is not allowed; "
                                    "use GET or POST")  # fmt: skip
                    return
                method()
                self.wfile.flush()
            except TimeoutError:
                self.close_connection = True
                if not self._replied:
                    try:
                        self._json(HTTPStatus.REQUEST_TIMEOUT, {"error": f"the request was not sent within "
                                                                f"{request_timeout:g} s; connection closed"})  # fmt: skip
                    except OSError:
                        pass

        def send_error(self, code, message=None, explain=None):
            # The standard library's errors (a malformed request line or headers) as JSON, like ours.
            self.close_connection = True
            text = message or HTTPStatus(code).phrase
            self._json(code, {"error": f"{text}: {explain}" if explain else text})

        def log_message(self, fmt, *args):  # quiet: one line per request would drown the terminal
            pass

        def _send(self, status: int, body: bytes, ctype: str):
            self._replied = True
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj):
            # allow_nan=False: NaN and Infinity are not JSON (the page's JSON.parse rejects them)
            self._send(status, json.dumps(finite(obj), allow_nan=False).encode("utf-8"), "application/json")

        def do_GET(self):
            if self.path == "/":
                self._send(200, html_page, "text/html; charset=utf-8")
            elif self.path == "/api/info":
                self._json(200, info)
            else:
                self._json(404, {"error": f"no such page {self.path!r}; try / or /api/info"})

        def do_POST(self):
            if self.path != "/api/generate":
                return self._json(404, {"error": f"no such endpoint {self.path!r}; POST to /api/generate"})
            try:
                length = int(self.headers.get("Content-Length", "-1"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                return self._json(
                    400, {"error": f"the request needs a Content-Length of at most {MAX_BODY} bytes"}
                )
            raw = self.rfile.read(length)
            try:
                request = parse_request(raw, model.cfg.vocab_size, max_new, table)
            except BadRequest as e:
                return self._json(400, {"error": str(e)})
            if not slots.acquire(blocking=False):
                return self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": f"busy: {max_concurrent} generations "
                                                                 "are running; retry shortly"})  # fmt: skip
            # The slot is released before the reply is sent, so a client that fires its next request the
            # moment it has this reply never finds its own finished request still holding the slot.
            try:
                status, reply = 200, generate_response(model, *request, max_new=max_new, table=table)
            except Exception as e:  # a failure in one request must not take the server down
                status, reply = 500, {"error": f"generation failed: {type(e).__name__}: {e}"}
            finally:
                slots.release()
            self._json(status, reply)

    class Server(ThreadingHTTPServer):
        request_queue_size = backlog  # socketserver's default, 5, resets the 6th client that connects at once
        daemon_threads = True

    return Server((host, port), Handler)
