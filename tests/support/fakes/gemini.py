"""A wire-faithful fake of Google's Gemini API on 127.0.0.1, its fault picked by the model name.

Serves POST /v1beta/models/{model}:generateContent, :streamGenerateContent?alt=sse,
:batchEmbedContents, GET /v1beta/models (paged) and GET /v1beta/models/{model}, with Google's
shapes: SSE frames `data: {GenerateContentResponse}` with CRLF line ends and no [DONE], errors
{"error": {code, message, status, details}}. It checks the API key (`x-goog-api-key`, or a `key`
query parameter when the header is missing) and rejects malformed bodies the way Google does,
so a translation bug shows up as a 400 rather than passing silently.

Model names (also used by the Ollama fake, see `parse_fault`):
  anything else           echo the last user text, one word per event, honest token counts
  thinker...              echo, preceded by a thought part (thoughtsTokenCount 3)
  fault-<code>[-x<K>]     answer HTTP <code> (the first K times per model, else always);
                          fault-401 -> 400 API_KEY_INVALID, as Google answers a bad key
  fault-429-retry-<S>[-x<K>]  429 RESOURCE_EXHAUSTED with a RetryInfo retryDelay "<S>s"
  fault-cut-after-<N>     stream N words, then drop the connection mid-body
  fault-stall-after-<N>   stream N words, then go silent until the client leaves
  fault-badjson-after-<N> stream N words, then a truncated JSON event, then end
  fault-glitch-after-<N>  stream N words, a truncated JSON event, then the rest as usual (Failover
                          Bench S10)
  fault-unterminated      the final event (finishReason, usage) without its closing blank line
  fault-error-after-<N>   stream N words, then an in-band {"error": ...} event, then end
  fault-slow-first-<S>    wait S seconds before the first word (or the whole answer)
  fault-tool              call the request's first tool with {"x": 1}
  fault-safety            finishReason SAFETY, no content
  fault-blocked           promptFeedback.blockReason SAFETY, no candidates
  fault-context           400 "The input token count ... exceeds the maximum ..."
  missing-model           404 NOT_FOUND

Usage:
    async with run_fake_gemini(keys={"gk_test"}) as fake:
        ... fake.base_url, fake.requests, fake.disconnected, fake.disconnects ...
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable

import orjson
from aiohttp import web

DEFAULT_KEY = "gk_test_0123456789abcdef"
THOUGHT = "Let me think."
_JSON = "application/json; charset=UTF-8"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_STATUS_MESSAGES = {
    400: "Request contains an invalid argument.",
    403: "The caller does not have permission",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}
_TOP_LEVEL = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
              "cachedContent", "model"}
_GEN_CONFIG = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "seed", "presencePenalty",
               "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema", "candidateCount",
               "thinkingConfig", "responseModalities", "responseLogprobs", "logprobs", "mediaResolution"}
_PART_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
                "codeExecutionResult"}


# --- the model-name fault grammar (shared with the Ollama fake) ------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """What a model name asks the fake to do; kind "" means a normal echo."""

    kind: str = ""  # "" | think | status | retry | cut | stall | badjson | error | glitch | slow | tool
    #                 | safety | blocked | context | missing | unterminated
    status: int = 0
    times: int | None = None  # status faults: only the first `times` requests per model
    n: int = 0  # words before a cut / stall / bad event
    seconds: float = 0.0  # slow-first delay, or the RetryInfo delay


_RULES: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"fault-429-retry-(\d+(?:\.\d+)?)(?:-x(\d+))?"),
     lambda m: Fault("retry", 429, _opt(m.group(2)), seconds=float(m.group(1)))),
    (re.compile(r"fault-(\d{3})(?:-x(\d+))?"), lambda m: Fault("status", int(m.group(1)), _opt(m.group(2)))),
    (re.compile(r"fault-(cut|stall|badjson|error|glitch)-after-(\d+)"), lambda m: Fault(m.group(1), n=int(m.group(2)))),
    (re.compile(r"fault-slow-first-(\d+(?:\.\d+)?)"), lambda m: Fault("slow", seconds=float(m.group(1)))),
    (re.compile(r"fault-(tool|safety|blocked|context|unterminated)"), lambda m: Fault(m.group(1))),
    (re.compile(r"missing-model"), lambda m: Fault("missing", 404)),
    (re.compile(r"thinker.*"), lambda m: Fault("think")),
)


def _opt(value: str | None) -> int | None:
    return int(value) if value is not None else None


def parse_fault(model: str) -> Fault:
    for pattern, make in _RULES:
        m = pattern.fullmatch(model)
        if m:
            return make(m)
    return Fault()


def tokens_of(text: str) -> list[str]:
    """The fake's tokenizer: a word with the whitespace before it; joining them gives `text` back."""
    return re.findall(r"\s*\S+", text)


def count_words(text: str) -> int:
    return len(text.split())


def fake_vector(text: str, dims: int) -> list[float]:
    """A deterministic embedding: the same text always maps to the same vector."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 127.5 - 1.0, 6) for i in range(dims)]


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake received it, for asserting the adapter's translation."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    raw: bytes
    body: Any = None  # parsed JSON, or None when absent or not JSON
    model: str = ""  # the model named in the path or body, "" for others


# --- the fake --------------------------------------------------------------------------------


@dataclass
class FakeGemini:
    """State of one fake Gemini server; tests read it and may change the knobs between calls."""

    accepted_keys: set[str] = field(default_factory=lambda: {DEFAULT_KEY})
    token_delay_s: float = 0.0  # pause between streamed events
    models: list[str] = field(default_factory=lambda: ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"])
    models_page_size: int = 50  # the most a list page holds, whatever pageSize asks
    force: str | None = None  # when set, every model call behaves as if its model were this name
    base_url: str = ""  # http://127.0.0.1:<port>, set once started
    requests: list[RecordedRequest] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)  # model-scoped calls per model name
    disconnects: int = 0  # requests whose client left before the answer was complete
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
        app.router.add_get("/v1beta/models", self._list_models)
        app.router.add_get("/v1beta/models/{target}", self._get_model)
        app.router.add_post("/v1beta/models/{target}", self._model_call)
        return app

    def _middleware(self) -> Any:
        @web.middleware
        async def watch(request: web.Request, handler: Any) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = None
            target = request.match_info.get("target", "")
            self.requests.append(
                RecordedRequest(
                    request.method, request.path, dict(request.query),
                    {k.lower(): v for k, v in request.headers.items()}, raw, body, target.rpartition(":")[0] or target,
                )
            )
            rejected = self._check_key(request)
            if rejected is not None:
                return rejected
            try:
                return await handler(request)
            except (asyncio.CancelledError, ConnectionResetError):
                # aiohttp cancels the handler when the client goes (handler_cancellation=True).
                if not self._stopping.is_set():
                    self.disconnects += 1
                    self.disconnected.set()
                raise

        return watch

    def _check_key(self, request: web.Request) -> web.Response | None:
        # Google reads the header first and the `key` query parameter only without it.
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return error_response(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key not in self.accepted_keys:
            return api_key_invalid()
        return None

    # -- handlers --

    async def _list_models(self, request: web.Request) -> web.Response:
        try:
            size = min(int(request.query.get("pageSize", "50")), self.models_page_size)
            start = int(request.query.get("pageToken") or 0)
        except ValueError:
            return error_response(400, "Invalid page token or size.")
        page = self.models[start : start + max(size, 1)]
        out: dict[str, Any] = {"models": [model_resource(m) for m in page]}
        if start + len(page) < len(self.models):
            out["nextPageToken"] = str(start + len(page))
        return json_response(out)

    async def _get_model(self, request: web.Request) -> web.Response:
        name = request.match_info["target"]
        if name not in self.models:
            return error_response(404, f"models/{name} is not found for API version v1beta")
        return json_response(model_resource(name))

    async def _model_call(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["target"].rpartition(":")
        if action not in ("generateContent", "streamGenerateContent", "batchEmbedContents", "countTokens"):
            return error_response(404, f"Method not found: {action}")
        body = self.requests[-1].body
        if not isinstance(body, dict):
            return error_response(400, "Invalid JSON payload received.")
        self.attempts[model] += 1
        fault = parse_fault(self.force or model)
        failed = self._status_fault(fault, model, action)
        if failed is not None:
            return failed
        if action == "batchEmbedContents":
            return self._embed(model, body)
        problem = validate_generate(body)
        if problem:
            return error_response(400, problem)
        if action == "countTokens":
            return json_response({"totalTokens": prompt_tokens(body)})
        if action == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                return error_response(400, "this fake streams only with alt=sse")
            return await self._stream(request, model, body, fault)
        return await self._generate(model, body, fault)

    def _status_fault(self, fault: Fault, model: str, action: str) -> web.Response | None:
        if fault.kind == "missing":
            return error_response(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for {action}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        if fault.kind == "context":
            return error_response(
                400, "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
            )
        if fault.kind not in ("status", "retry"):
            return None
        if fault.times is not None and self.attempts[model] > fault.times:
            return None
        if fault.kind == "retry":
            return rate_limited(fault.seconds)
        if fault.status == 401:
            return api_key_invalid()  # Google answers a bad key with 400, never 401
        return error_response(fault.status, _STATUS_MESSAGES.get(fault.status, "Request failed."))

    def _embed(self, model: str, body: dict[str, Any]) -> web.Response:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return error_response(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        if len(requests) > 100:
            return error_response(400, "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch")
        out = []
        for i, r in enumerate(requests):
            if not isinstance(r, dict) or r.get("model") != f"models/{model}":
                return error_response(
                    400, f"Model names should be the same in the batch request: requests[{i}].model"
                )
            parts = (r.get("content") or {}).get("parts") or []
            text = " ".join(p.get("text", "") for p in parts if isinstance(p, dict))
            out.append({"values": fake_vector(text, int(r.get("outputDimensionality") or 8))})
        return json_response({"embeddings": out})

    async def _generate(self, model: str, body: dict[str, Any], fault: Fault) -> web.Response:
        if fault.kind == "slow":
            await self._sleep(fault.seconds)
        answer = plan_answer(model, body, fault)
        if isinstance(answer, web.Response):
            return answer
        return json_response(answer.whole())

    async def _stream(
        self, request: web.Request, model: str, body: dict[str, Any], fault: Fault
    ) -> web.StreamResponse:
        answer = plan_answer(model, body, fault)
        if isinstance(answer, web.Response):
            return answer
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        if fault.kind == "slow":
            await self._sleep(fault.seconds)
        events = answer.events()
        stop_after = fault.n if fault.kind in ("cut", "stall", "badjson", "error") else None
        sent = 0
        for event, is_last in events:
            if stop_after is not None and (sent >= stop_after or is_last):
                break
            if sent and self.token_delay_s:
                await self._sleep(self.token_delay_s)
            if fault.kind == "glitch" and sent == fault.n:
                await resp.write(b'data: {"candidates": [{"content": {"parts": [{"text": "tru\r\n\r\n')
            end = b"" if fault.kind == "unterminated" and is_last else b"\r\n\r\n"
            await resp.write(b"data: " + orjson.dumps(event) + end)
            sent += 1
        if fault.kind == "cut":
            assert request.transport is not None
            request.transport.close()  # mid-body: the chunked encoding never ends
            return resp
        if fault.kind == "stall":
            await self._stopping.wait()
            return resp
        if fault.kind == "badjson":
            await resp.write(b'data: {"candidates": [{"content": {"parts": [{"text": "tru\r\n\r\n')
        if fault.kind == "error":
            err = {"error": {"code": 500, "message": _STATUS_MESSAGES[500], "status": "INTERNAL"}}
            await resp.write(b"data: " + orjson.dumps(err) + b"\r\n\r\n")
        await resp.write_eof()
        self.completed_streams += 1
        return resp

    async def _sleep(self, seconds: float) -> None:
        # Ends early when the fake stops, so a test's teardown never waits out a fault.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


# --- answers ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """What the fake will say to one generate call, as a whole or as events."""

    model: str
    prompt_tokens: int
    tokens: list[str] = field(default_factory=list)
    finish: str = "STOP"
    thought: bool = False
    tool_call: dict[str, Any] | None = None
    blocked: bool = False

    @property
    def response_id(self) -> str:
        return "resp_" + hashlib.sha256(f"{self.model}:{self.prompt_tokens}:{''.join(self.tokens)}".encode()).hexdigest()[:12]

    def usage(self, emitted: int, final: bool) -> dict[str, Any]:
        cands = emitted if self.tool_call is None else 3
        out: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        if self.blocked or self.finish == "SAFETY":
            out["totalTokenCount"] = self.prompt_tokens
            return out
        thoughts = 3 if self.thought else 0
        out["candidatesTokenCount"] = cands
        out["totalTokenCount"] = self.prompt_tokens + cands + thoughts
        if thoughts and final:
            out["thoughtsTokenCount"] = thoughts
        out["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt_tokens}]
        return out

    def _envelope(self, candidate: dict[str, Any] | None, usage: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.blocked:
            out["promptFeedback"] = {"blockReason": "SAFETY", "safetyRatings": _RATINGS}
        else:
            out["candidates"] = [candidate]
        out.update(usageMetadata=usage, modelVersion=self.model, responseId=self.response_id)
        return out

    def whole(self) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if self.thought:
            parts.append({"text": THOUGHT, "thought": True})
        if self.tool_call is not None:
            parts.append({"functionCall": self.tool_call})
        elif self.tokens:
            parts.append({"text": "".join(self.tokens)})
        return self._envelope(self._candidate(parts, self.finish), self.usage(len(self.tokens), True))

    def events(self) -> list[tuple[dict[str, Any], bool]]:
        """(event, is_last) pairs; the last carries finishReason and the complete usage."""
        if self.blocked or self.finish == "SAFETY" or self.tool_call is not None:
            return [(self.whole(), True)]
        out = []
        for i, tok in enumerate(self.tokens):
            last = i == len(self.tokens) - 1
            parts = [{"text": tok}]
            if i == 0 and self.thought:
                parts.insert(0, {"text": THOUGHT, "thought": True})
            out.append((self._envelope(self._candidate(parts, self.finish if last else ""), self.usage(i + 1, last)), last))
        return out

    @staticmethod
    def _candidate(parts: list[dict[str, Any]], finish: str) -> dict[str, Any]:
        cand: dict[str, Any] = {"index": 0}
        if parts:
            cand["content"] = {"parts": parts, "role": "model"}
        if finish:
            cand["finishReason"] = finish
        if finish == "SAFETY":
            cand["safetyRatings"] = _RATINGS
        return cand


_RATINGS = [
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
]


def plan_answer(model: str, body: dict[str, Any], fault: Fault) -> Answer | web.Response:
    answer = Answer(model=model, prompt_tokens=prompt_tokens(body))
    gen = body.get("generationConfig") or {}
    if fault.kind == "tool":
        decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        if not decls:
            return error_response(400, "fault-tool needs at least one function declaration")
        answer.tool_call = {"name": decls[0]["name"], "args": {"x": 1}}
        return answer
    if fault.kind == "safety":
        answer.finish = "SAFETY"
        return answer
    if fault.kind == "blocked":
        answer.blocked = True
        return answer
    answer.thought = fault.kind == "think"
    text = last_user_text(body) or "ok"
    if gen.get("responseMimeType") == "application/json":
        text = orjson.dumps({"echo": text}).decode()
    tokens = tokens_of(text)
    limit = gen.get("maxOutputTokens")
    if isinstance(limit, int) and 0 < limit < len(tokens):
        tokens, answer.finish = tokens[:limit], "MAX_TOKENS"
    answer.tokens = tokens
    return answer


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role") == "user":
            texts = [p["text"] for p in content.get("parts") or [] if "text" in p]
            if texts:
                return " ".join(texts)
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    parts = [p for c in body.get("contents") or [] for p in c.get("parts") or []]
    parts += (body.get("systemInstruction") or {}).get("parts") or []
    words = sum(count_words(p.get("text", "")) for p in parts)
    media = sum(1 for p in parts if "inlineData" in p or "fileData" in p)
    return max(1, words + media)


def validate_generate(body: dict[str, Any]) -> str:
    """Google's 400 text for a malformed generateContent body, or "" when it is fine."""
    unknown = set(body) - _TOP_LEVEL
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.'
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, c in enumerate(contents):
        if c.get("role") not in ("user", "model"):
            return "Please use a valid role: user, model."
        parts = c.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for p in parts:
            fields = set(p) & _PART_FIELDS
            if len(fields) != 1:
                return f"* GenerateContentRequest.contents[{i}].parts: a part must hold exactly one kind of data"
            if "functionResponse" in p and not p["functionResponse"].get("name"):
                return f"* GenerateContentRequest.contents[{i}].parts.function_response.name: Name cannot be empty."
            if "inlineData" in p and not p["inlineData"].get("mimeType"):
                return f"* GenerateContentRequest.contents[{i}].parts.inline_data.mime_type: required"
            if "fileData" in p and not p["fileData"].get("mimeType"):
                return f"* GenerateContentRequest.contents[{i}].parts.file_data.mime_type: required"
    for tool in body.get("tools") or []:
        for d in tool.get("functionDeclarations") or []:
            if "parameters" in d and "parametersJsonSchema" in d:
                return "parameters and parametersJsonSchema are mutually exclusive"
    unknown = set(body.get("generationConfig") or {}) - _GEN_CONFIG
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at \'generation_config\': Cannot find field.'
    return ""


def model_resource(name: str) -> dict[str, Any]:
    methods = ["embedContent", "batchEmbedContents"] if "embedding" in name else ["generateContent", "countTokens"]
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": methods,
    }


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", charset="UTF-8")


def error_response(code: int, message: str, details: list[dict[str, Any]] | None = None) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message, "status": _STATUS_NAMES.get(code, "UNKNOWN")}
    if details:
        err["details"] = details
    return json_response({"error": err}, code)


def api_key_invalid() -> web.Response:
    message = "API key not valid. Please pass a valid API key."
    return error_response(400, message, [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
    ])


def rate_limited(seconds: float) -> web.Response:
    return error_response(429, _STATUS_MESSAGES[429], [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds:g}s"},
    ])


@contextlib.asynccontextmanager
async def run_fake_gemini(
    *, keys: Iterable[str] = (DEFAULT_KEY,), token_delay_s: float = 0.0
) -> AsyncIterator[FakeGemini]:
    """Start a FakeGemini on 127.0.0.1:<free port>; stopped (and its streams ended) on exit."""
    fake = FakeGemini(accepted_keys=set(keys), token_delay_s=token_delay_s)
    async with serve(fake.make_app(), fake._stopping) as base_url:
        fake.base_url = base_url
        yield fake


@contextlib.asynccontextmanager
async def serve(app: web.Application, stopping: asyncio.Event) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1:0 and yield its origin; `stopping` is set before shutdown."""
    # handler_cancellation: a client that leaves cancels its handler, which is how the fakes see
    # disconnects even while they sleep between events.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        stopping.set()
        await runner.cleanup()
