"""A wire-faithful fake of Ollama's native API on 127.0.0.1, its fault picked by the model name.

Serves POST /api/chat (NDJSON stream by default, one object with "stream": false), POST
/api/embed, GET /api/tags and GET /api/version with the shapes of ollama docs/api.md, and the
model-management API a loader uses: POST /api/pull and POST /api/create (NDJSON status lines,
{"status": ...} with digest/total/completed while pulling, ending {"status": "success"}; a
failure mid-stream is an {"error": ...} line after the 200; "stream": false answers one
object), HEAD/POST /api/blobs/sha256:<hex> (200/404; 201, or 400 on a digest mismatch),
POST /api/show (details, model_info, capabilities; 404 {"error": "model 'x' not found"}) and
DELETE /api/delete. Pullable names are `library`; pulled and created models join `models`: stream
lines {model, created_at, message, done:false} ending with {done:true, done_reason,
prompt_eval_count, eval_count, ...}; errors {"error": "..."}; a failure after the 200 as an
{"error": ...} line. Ollama checks no key; `required_key` makes it act like an authenticating
proxy in front of one (Bearer).

Model names follow the Gemini fake's grammar (tests/support/fakes/gemini.py, `parse_fault`):
echo by default, thinker..., fault-<code>[-x<K>], fault-429-retry-<S> (Retry-After header),
fault-cut/stall/badjson/error/glitch-after-<N>, fault-unterminated (the done line without its
newline), fault-slow-first-<S>, fault-tool, and
missing-model -> 404 {"error": "model 'missing-model' not found"}. fault-401 -> 401,
fault-403 -> 403; fault-safety / fault-blocked / fault-context do not exist in Ollama and echo.

Usage:
    async with run_fake_ollama() as fake:
        ... fake.base_url, fake.requests, fake.disconnected, fake.disconnects ...
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import orjson
from aiohttp import web

from tests.support.fakes import openai_completions
from tests.support.fakes.gemini import (
    THOUGHT,
    Fault,
    RecordedRequest,
    count_words,
    fake_vector,
    parse_fault,
    serve,
    tokens_of,
)

CREATED_AT = "2025-01-01T00:00:00.000000Z"  # fixed: answers are byte-for-byte deterministic
_ROLES = {"system", "user", "assistant", "tool"}
_MESSAGES = {
    400: "invalid request",
    401: "unauthorized",
    403: "forbidden",
    429: "too many requests",
    500: "an error was encountered while running the model: unexpected EOF",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


@dataclass
class FakeOllama:
    """State of one fake Ollama server; tests read it and may change the knobs between calls."""

    required_key: str | None = None  # act as a Bearer-checking proxy when set
    token_delay_s: float = 0.0
    models: list[str] = field(default_factory=lambda: ["llama3.2:latest", "llava:latest", "all-minilm:latest"])
    force: str | None = None  # when set, every model call behaves as if its model were this name
    library: set[str] = field(default_factory=lambda: {"llama3.2", "qwen2.5:0.5b", "tinyllama"})  # what /api/pull finds
    blobs: dict[str, bytes] = field(default_factory=dict)  # "sha256:<hex>" -> content, from POST /api/blobs
    created: dict[str, dict[str, str]] = field(default_factory=dict)  # model -> its create request's files
    pull_delay_s: float = 0.0  # between pull progress lines
    base_url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    disconnects: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    completed_streams: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        self.requests.clear()
        self.attempts.clear()
        self.disconnects = 0
        self.disconnected.clear()
        self.completed_streams = 0

    def bodies(self, path_contains: str = "") -> list[Any]:
        return [r.body for r in self.requests if path_contains in r.path]

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    async def wait_disconnect(self, timeout_s: float = 1.0) -> bool:
        try:
            await asyncio.wait_for(self.disconnected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- wiring --

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware()])
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/version", self._version)
        app.router.add_post("/api/pull", self._pull)
        app.router.add_post("/api/create", self._create)
        app.router.add_route("HEAD", "/api/blobs/{digest}", self._blob_exists)
        app.router.add_post("/api/blobs/{digest}", self._blob_push)
        app.router.add_post("/api/show", self._show)
        openai_completions.add_route(app, owner="ollama")  # its OpenAI-compatible /v1/completions (recorded by the middleware)
        app.router.add_delete("/api/delete", self._delete)
        return app

    def _middleware(self) -> Any:
        @web.middleware
        async def watch(request: web.Request, handler: Any) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = None
            model = str(body.get("model") or "") if isinstance(body, dict) else ""
            self.requests.append(
                RecordedRequest(
                    request.method, request.path, dict(request.query),
                    {k.lower(): v for k, v in request.headers.items()}, raw, body, model,
                )
            )
            if self.required_key is not None and request.headers.get("authorization") != f"Bearer {self.required_key}":
                return error_response(401, "unauthorized")
            try:
                return await handler(request)
            except (asyncio.CancelledError, ConnectionResetError):
                if not self._stopping.is_set():
                    self.disconnects += 1
                    self.disconnected.set()
                raise

        return watch

    # -- handlers --

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": "0.12.6"})

    async def _tags(self, request: web.Request) -> web.Response:
        return json_response({"models": [tag(m) for m in self.models]})

    # -- model management (docs/api.md: pull, create, blobs, show, delete) --

    def _has(self, name: str) -> str | None:
        full = name if ":" in name else name + ":latest"
        return full if full in self.models else None

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        body = self.requests[-1].body
        if not isinstance(body, dict) or not isinstance(body.get("model") or body.get("name"), str):
            return error_response(400, "model is required")
        name = body.get("model") or body.get("name")
        stream = body.get("stream", True) is not False
        known = name in self.library or name.split(":")[0] in self.library
        if not stream:
            if not known:
                return error_response(500, "pull model manifest: file does not exist")
            self._add(name)
            return json_response({"status": "success"})
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if known:
            lines += [{"status": f"pulling {digest[7:19]}", "digest": digest, "total": 2019393189, "completed": c}
                      for c in (0, 1009696594, 2019393189)]
            lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
        else:
            lines.append({"error": "pull model manifest: file does not exist"})
        resp = await self._ndjson(request, lines, self.pull_delay_s)
        if known:
            self._add(name)
        return resp

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body = self.requests[-1].body
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            return error_response(400, "model is required")
        files = body.get("files") or {}
        if not body.get("from") and not files:
            return error_response(400, "neither 'from' or 'files' was specified")
        for digest in files.values():
            if digest not in self.blobs:
                return error_response(400, f"blob {digest} not found")
        gguf = [d for d in files.values() if self.blobs[d][:4] == b"GGUF"]
        if files and not gguf:
            return error_response(400, "invalid file magic")
        lines: list[dict[str, Any]] = [{"status": "parsing GGUF"}]
        lines += [{"status": f"using existing layer {d}"} for d in files.values()]
        lines += [{"status": "writing manifest"}, {"status": "success"}]
        if body.get("stream", True) is False:
            resp: web.StreamResponse = json_response({"status": "success"})
        else:
            resp = await self._ndjson(request, lines, 0.0)
        self.created[body["model"]] = dict(files)
        self._add(body["model"])
        return resp

    async def _blob_exists(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if request.match_info["digest"] in self.blobs else 404)

    async def _blob_push(self, request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        data = self.requests[-1].raw
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            return error_response(400, "digest mismatch")
        self.blobs[digest] = data
        return web.Response(status=201)

    async def _show(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body
        name = body.get("model") or body.get("name") if isinstance(body, dict) else None
        full = self._has(name) if isinstance(name, str) else None
        if full is None:
            return error_response(404, f"model '{name}' not found")
        return json_response({
            "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {full}\n",
            "parameters": "", "template": "{{ .Prompt }}",
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "llama", "general.parameter_count": 3212749888,
                           "llama.context_length": 131072},
            "capabilities": ["completion", "tools"],
            "modified_at": CREATED_AT,
        })

    async def _delete(self, request: web.Request) -> web.Response:
        body = self.requests[-1].body
        name = body.get("model") or body.get("name") if isinstance(body, dict) else None
        full = self._has(name) if isinstance(name, str) else None
        if full is None:
            return error_response(404, f"model '{name}' not found")
        self.models.remove(full)
        return web.Response(status=200)

    def _add(self, name: str) -> None:
        full = name if ":" in name else name + ":latest"
        if full not in self.models:
            self.models.append(full)

    async def _ndjson(self, request: web.Request, lines: list[dict[str, Any]], delay_s: float) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for line in lines:
            if delay_s:
                await asyncio.sleep(delay_s)
            await resp.write(orjson.dumps(line) + b"\n")
        await resp.write_eof()
        return resp

    def _model_checks(self, body: Any) -> tuple[str, Fault] | web.Response:
        if not isinstance(body, dict):
            return error_response(400, "invalid character looking for beginning of value")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(400, "model is required")
        self.attempts[model] += 1
        fault = parse_fault(self.force or model)
        if fault.kind == "missing":
            return error_response(404, f"model '{model}' not found")
        if fault.kind in ("status", "retry") and (fault.times is None or self.attempts[model] <= fault.times):
            if fault.kind == "retry":
                resp = error_response(429, _MESSAGES[429])
                resp.headers["Retry-After"] = f"{fault.seconds:g}"
                return resp
            return error_response(fault.status, _MESSAGES.get(fault.status, "request failed"))
        return model, fault

    async def _embed(self, request: web.Request) -> web.Response:
        checked = self._model_checks(self.requests[-1].body)
        if isinstance(checked, web.Response):
            return checked
        model, _ = checked
        body = self.requests[-1].body
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            return error_response(400, "invalid input type")
        dims = int(body.get("dimensions") or 8)
        return json_response({
            "model": model,
            "embeddings": [fake_vector(t, dims) for t in inputs],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": sum(max(1, count_words(t)) for t in inputs),
        })

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        checked = self._model_checks(self.requests[-1].body)
        if isinstance(checked, web.Response):
            return checked
        model, fault = checked
        body = self.requests[-1].body
        problem = validate_chat(body)
        if problem:
            return error_response(400, problem)
        answer = plan_answer(model, body, fault)
        if isinstance(answer, web.Response):
            return answer
        if body.get("stream", True) is False:
            if fault.kind == "slow":
                await self._sleep(fault.seconds)
            return json_response(answer.whole())
        resp = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await resp.prepare(request)
        if fault.kind == "slow":
            await self._sleep(fault.seconds)
        stop_after = fault.n if fault.kind in ("cut", "stall", "badjson", "error") else None
        lines = answer.lines()
        for i, line in enumerate(lines):
            is_done = i == len(lines) - 1
            if stop_after is not None and (i >= stop_after or is_done):
                break
            if i and self.token_delay_s:
                await self._sleep(self.token_delay_s)
            if fault.kind == "glitch" and i == fault.n:  # a truncated line, then the rest as usual (S10)
                await resp.write(b'{"model":"' + model.encode() + b'","message":{"role":"assistant","content":"tru\n')
            await resp.write(orjson.dumps(line) + (b"" if fault.kind == "unterminated" and is_done else b"\n"))
        if fault.kind == "cut":
            assert request.transport is not None
            request.transport.close()  # mid-body: the chunked encoding never ends
            return resp
        if fault.kind == "stall":
            await self._stopping.wait()
            return resp
        if fault.kind == "badjson":
            await resp.write(b'{"model":"' + model.encode() + b'","message":{"role":"assistant","content":"tru\n')
        if fault.kind == "error":
            await resp.write(orjson.dumps({"error": _MESSAGES[500]}) + b"\n")
        await resp.write_eof()
        self.completed_streams += 1
        return resp

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


@dataclass(slots=True)
class Answer:
    model: str
    prompt_tokens: int
    tokens: list[str] = field(default_factory=list)
    done_reason: str = "stop"
    thinking: bool = False
    tool_call: dict[str, Any] | None = None

    def _final(self, message: dict[str, Any], eval_count: int) -> dict[str, Any]:
        return {
            "model": self.model,
            "created_at": CREATED_AT,
            "message": message,
            "done_reason": self.done_reason,
            "done": True,
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": 342546000,
            "eval_count": eval_count,
            "eval_duration": 4535599000,
        }

    def _message(self, content: str, first: bool) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if first and self.thinking:
            msg["thinking"] = THOUGHT
        return msg

    def whole(self) -> dict[str, Any]:
        msg = self._message("".join(self.tokens), True)
        if self.tool_call is not None:
            msg["tool_calls"] = [self.tool_call]
            return self._final(msg, 3)
        return self._final(msg, len(self.tokens))

    def lines(self) -> list[dict[str, Any]]:
        """Every stream line in order; the last one is the done:true line."""
        if self.tool_call is not None:
            first = {"model": self.model, "created_at": CREATED_AT,
                     "message": {"role": "assistant", "content": "", "tool_calls": [self.tool_call]}, "done": False}
            return [first, self._final({"role": "assistant", "content": ""}, 3)]
        out = [
            {"model": self.model, "created_at": CREATED_AT, "message": self._message(tok, i == 0), "done": False}
            for i, tok in enumerate(self.tokens)
        ]
        out.append(self._final({"role": "assistant", "content": ""}, len(self.tokens)))
        return out


def plan_answer(model: str, body: dict[str, Any], fault: Fault) -> Answer | web.Response:
    messages = body.get("messages") or []
    answer = Answer(model=model, prompt_tokens=max(1, sum(count_words(str(m.get("content") or "")) for m in messages)))
    if fault.kind == "tool":
        tools = body.get("tools") or []
        if not tools:
            return error_response(400, "fault-tool needs at least one tool")
        answer.tool_call = {"function": {"name": tools[0]["function"]["name"], "arguments": {"x": 1}}}
        return answer
    answer.thinking = fault.kind == "think"
    text = next((str(m["content"]) for m in reversed(messages) if m.get("role") == "user" and m.get("content")), "")
    text = text or "ok"
    if body.get("format") is not None:
        text = orjson.dumps({"echo": text}).decode()
    tokens = tokens_of(text)
    limit = (body.get("options") or {}).get("num_predict")
    if isinstance(limit, int) and 0 < limit < len(tokens):
        tokens, answer.done_reason = tokens[:limit], "length"
    answer.tokens = tokens
    return answer


def validate_chat(body: dict[str, Any]) -> str:
    """Ollama's 400 text for a malformed /api/chat body, or "" when it is fine."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages must be a list"
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"invalid role: {m.get('role') if isinstance(m, dict) else m!r}"
        if not isinstance(m.get("content", ""), str):
            return "json: cannot unmarshal array into Go struct field Message.messages.content of type string"
        for img in m.get("images") or []:
            try:
                base64.b64decode(img, validate=True)
            except (binascii.Error, ValueError, TypeError):
                return "illegal base64 data at input byte 0"
        for tc in m.get("tool_calls") or []:
            if not isinstance((tc.get("function") or {}).get("arguments"), dict):
                return "json: cannot unmarshal string into Go struct field ToolCallFunction.arguments"
    fmt = body.get("format")
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        return f"invalid format: {fmt!r}"
    return ""


def tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": CREATED_AT,
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
    }


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", charset="utf-8")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


@contextlib.asynccontextmanager
async def run_fake_ollama(
    *, required_key: str | None = None, token_delay_s: float = 0.0
) -> AsyncIterator[FakeOllama]:
    """Start a FakeOllama on 127.0.0.1:<free port>; stopped (and its streams ended) on exit."""
    fake = FakeOllama(required_key=required_key, token_delay_s=token_delay_s)
    async with serve(fake.make_app(), fake._stopping) as base_url:
        fake.base_url = base_url
        yield fake
