"""Loading a model (seed 000's POST /api/models/load, ModelService.LoadModel / StreamLoadModel).

Three formats, each ending in a row of loaded_models and a name routable at once:
- `gguf`: `source` is a file path inside the model directory (`model_dir`, default
  `<data_dir>/models`; nothing outside it is read, whatever the caller writes). The file must
  start with GGUF's magic; it is hashed, uploaded to the configured Ollama as a blob unless
  Ollama has it, and made a model with Ollama's create API.
- `ollama`: `source` is a library name ("llama3.2"), pulled through the configured Ollama.
- `openai`: `source` is an OpenAI-compatible base URL, `model` its model id (default: the
  name), `api_key` its key if it needs one. The URL is checked like users' provider keys (a
  public address only, RELIABILITY F8), the server's /models is asked through the guarded
  connector (the key must work, the model must be there), and the key is stored sealed.

Progress is yielded as it happens (Progress), then the LoadedModel. Who may load: admins, and
keys whose tier says `load_models`. Bad sources are 4xx errors that name the field and never
repeat a key or a URL's credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp

from services.providers import ssrf
from services.core.principal import Principal
from services.auth.provider_secrets import ProviderSecrets
from services.config.schema import Config
from services.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.core.types import Target
from services.loading.ollama_api import OllamaApi, OllamaError
from services.loading.registry import LoadedModel, LoadedModels
from services.providers.upstreams import Upstreams
from services.routing.candidates import CandidateIndex
from services.store.records import LoadedModelRecord
from services.store.store import Store

FORMATS = ("gguf", "ollama", "openai")
NAME_MAX = 128
SOURCE_MAX = 2048
GGUF_MAGIC = b"GGUF"
VERIFY_TIMEOUT_S = 10.0
_OLLAMA_NAME = re.compile(r"[^a-z0-9._-]+")


@dataclass(slots=True)
class LoadRequest:
    source: str
    format: str
    name: str
    model: str = ""
    api_key: str = ""


@dataclass(slots=True)
class Progress:
    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0


class ModelLoader:
    def __init__(self, config: Config, store: Store, secrets: ProviderSecrets, index: CandidateIndex,
                 upstreams: Upstreams, registry: LoadedModels) -> None:
        self.config = config
        self.store = store
        self.secrets = secrets  # seals a loaded model's key before the store keeps it
        self.index = index  # the configured models: a loaded model may not take one's name
        self.upstreams = upstreams
        self.registry = registry

    @property
    def model_dir(self) -> str:
        cfg = self.config
        return os.path.realpath(cfg.model_dir or os.path.join(cfg.data_dir, "models"))

    async def load(self, req: LoadRequest, who: Principal) -> AsyncIterator[Progress | LoadedModel]:
        self._allowed(who)
        req = self._checked(req)
        if req.format == "gguf":
            steps = self._gguf(req)
        elif req.format == "ollama":
            steps = self._ollama(req)
        else:
            steps = self._openai(req)
        record: LoadedModelRecord | None = None
        secret = ""
        async for step in steps:
            if isinstance(step, Progress):
                yield step
            else:
                record, secret = step
        assert record is not None
        record.created_by = who.key_id
        # The name may have been taken meanwhile (here or on another replica): the unique index decides.
        stored = await self.secrets.add_loaded_model(record, secret)
        loaded = await self.registry.add(stored, secret)
        yield Progress("success")
        yield loaded

    async def unload(self, name: str, who: Principal) -> LoadedModel:
        self._allowed(who)
        rec = await self.store.remove_loaded_model(name)
        gone = self.registry.remove(name)
        if rec is None and gone is None:
            raise NotFound(f"no model named {name!r} is loaded", reason="MODEL_NOT_FOUND", metadata={"model": name})
        return gone if gone is not None else self.registry._build(rec)

    # ------------------------------------------------------------------ checks

    def _allowed(self, who: Principal) -> None:
        if who.is_admin:
            return
        tier = next((t for t in self.config.tiers if t.name == who.tier), None)
        if tier is None or not tier.load_models:
            raise PermissionDenied(f"loading models is not allowed for tier {who.tier!r} (an admin can, or a tier "
                                   "with load_models = true)", reason="MODEL_LOAD_NOT_ALLOWED", metadata={"tier": who.tier})

    def _checked(self, req: LoadRequest) -> LoadRequest:
        problems: list[FieldViolation] = []
        fmt = req.format.strip().lower()
        if fmt not in FORMATS:
            problems.append(FieldViolation("format", f"unknown format {req.format[:40]!r} (one of {', '.join(FORMATS)})"
                                           if req.format else f"required (one of {', '.join(FORMATS)})"))
        name = req.name.strip()
        if not name or len(name) > NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in name):
            problems.append(FieldViolation("name", f"required: 1-{NAME_MAX} printable characters"))
        source = req.source.strip()
        if not source or len(source) > SOURCE_MAX or any(ord(c) < 32 or ord(c) == 127 for c in source):
            problems.append(FieldViolation("source", f"required: 1-{SOURCE_MAX} printable characters"))
        if req.model and (len(req.model) > NAME_MAX or any(c.isspace() for c in req.model)):
            problems.append(FieldViolation("model", f"a model id of at most {NAME_MAX} characters, no spaces"))
        if problems:
            raise _invalid(problems)
        if self.registry.get(name) is not None:
            raise AlreadyExists(f"a model named {name!r} is already loaded", reason="MODEL_ALREADY_LOADED",
                                metadata={"name": name})
        if self.index.catalog_get(name) is not None or self.index.lists(name):
            # Loading under a name the gateway already routes would take that model from everyone.
            raise AlreadyExists(f"{name!r} is already a model of this gateway; choose another name",
                                reason="MODEL_NAME_TAKEN", metadata={"name": name})
        return LoadRequest(source=source, format=fmt, name=name, model=req.model.strip(), api_key=req.api_key.strip())

    def _ollama_api(self) -> tuple[str, OllamaApi]:
        cfg = self.config
        ollamas = sorted((p for p in cfg.providers if p.kind == "ollama"), key=lambda p: p.priority)
        if not ollamas:
            raise FailedPrecondition("no Ollama is configured to load the model into (set OLLAMA_BASE_URL or a "
                                     "[[providers]] kind = \"ollama\")", reason="OLLAMA_NOT_CONFIGURED")
        p = ollamas[0]
        key = p.keys[0] if p.keys else None
        target = Target(provider=p.name, kind=p.kind, key_id=key.id if key else "", model="", base_url=p.base_url)
        return p.name, OllamaApi(target, self.upstreams.session(p.base_url), key.secret if key else "")

    # ------------------------------------------------------------------ formats

    async def _gguf(self, req: LoadRequest) -> AsyncIterator[Any]:
        root = self.model_dir
        path = os.path.realpath(os.path.join(root, req.source))
        if not path.startswith(root + os.sep):
            raise _invalid([FieldViolation("source", "must be a path inside the gateway's model directory "
                                                     "(model_dir; absolute paths and .. are refused)")])
        if not os.path.isfile(path):
            raise _invalid([FieldViolation("source", f"no such file {req.source[:200]!r} in the model directory")],
                           reason="SOURCE_NOT_FOUND")
        provider, api = self._ollama_api()
        size = os.path.getsize(path)
        with open(path, "rb") as f:  # four bytes; the hash below reads in a thread
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise _invalid([FieldViolation("source", "not a GGUF file (it does not start with GGUF's magic bytes)")],
                           reason="SOURCE_NOT_GGUF")
        yield Progress("hashing", total=size)
        digest = "sha256:" + await asyncio.to_thread(_sha256, path)
        yield Progress("hashed", digest=digest, total=size, completed=size)
        ollama_name = _ollama_name(req.name)
        try:
            if not await api.has_blob(digest):
                yield Progress("uploading", digest=digest, total=size)
                await api.push_blob(digest, path, size, lambda done: None)
                yield Progress("uploaded", digest=digest, total=size, completed=size)
            async for line in api.create(ollama_name, {os.path.basename(path) or "model.gguf": digest}):
                if line.get("status") != "success":
                    yield _progress(line)
        except OllamaError as e:
            raise _ollama_failed(e, "create") from None
        yield (LoadedModelRecord(id="", name=req.name, format="gguf", source=req.source, provider=provider, kind="ollama",
                                 base_url="", upstream_model=ollama_name,
                                 description=f"GGUF file {os.path.basename(path)} in Ollama as {ollama_name}",
                                 context_length=await self._context_length(api, ollama_name)), "")

    async def _ollama(self, req: LoadRequest) -> AsyncIterator[Any]:
        provider, api = self._ollama_api()
        try:
            async for line in api.pull(req.source):
                if line.get("status") != "success":
                    yield _progress(line)
        except OllamaError as e:
            raise _ollama_failed(e, "pull", req.source) from None
        yield (LoadedModelRecord(id="", name=req.name, format="ollama", source=req.source, provider=provider,
                                 kind="ollama", base_url="", upstream_model=req.source,
                                 description=f"Ollama library model {req.source}",
                                 context_length=await self._context_length(api, req.source)), "")

    async def _openai(self, req: LoadRequest) -> AsyncIterator[Any]:
        try:
            # RELIABILITY F8: a public address only, checked and resolved now; the connector checks again.
            base_url = (await ssrf.check_url_resolving(req.source)).url
        except ssrf.UnsafeUrl as e:
            raise _invalid([FieldViolation("source", e.message)], reason=e.reason) from None
        model = req.model or req.name
        yield Progress("checking the server")
        session = self.upstreams.session(base_url, guarded=True)
        headers = {"authorization": f"Bearer {req.api_key}"} if req.api_key else {}
        try:
            async with session.get(base_url.rstrip("/") + "/models", headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=VERIFY_TIMEOUT_S)) as resp:
                body = await resp.content.read(4 * 1024 * 1024)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise _invalid([FieldViolation("source", f"the server could not be reached ({type(e).__name__})")],
                           reason="SOURCE_UNREACHABLE") from None
        if status in (401, 403):
            raise _invalid([FieldViolation("api_key", f"the server refused the key (HTTP {status})")],
                           reason="SOURCE_KEY_REFUSED")
        if status == 200:
            ids = _model_ids(body)
            if ids is not None and ids and model not in ids:
                raise NotFound(f"the server does not list model {model[:NAME_MAX]!r}", reason="SOURCE_MODEL_NOT_FOUND",
                               metadata={"model": model}, field_violations=[FieldViolation("model", "not listed by the server")])
        elif status != 404:  # some servers have no /models; chat decides then
            raise _invalid([FieldViolation("source", f"the server answered HTTP {status} for /models")],
                           reason="SOURCE_UNAVAILABLE")
        yield Progress("verified")
        yield (LoadedModelRecord(id="", name=req.name, format="openai", source=base_url, provider="",
                                 kind="openai_compatible", base_url=base_url, upstream_model=model,
                                 description=f"{model} at an OpenAI-compatible server"), req.api_key)

    async def _context_length(self, api: OllamaApi, model: str) -> int:
        try:
            info = (await api.show(model)).get("model_info") or {}
        except OllamaError:
            return 0
        return next((int(v) for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)), 0)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            h.update(block)
    return h.hexdigest()


def _ollama_name(name: str) -> str:
    """Ollama model names are lower-case words: "My Custom Model" -> "my-custom-model"."""
    return _OLLAMA_NAME.sub("-", name.lower()).strip("-.") or "model"


def _progress(line: dict[str, Any]) -> Progress:
    def num(v: Any) -> int:
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0

    return Progress(str(line.get("status") or "")[:200], str(line.get("digest") or "")[:100],
                    num(line.get("total")), num(line.get("completed")))


def _model_ids(body: bytes) -> set[str] | None:
    import orjson

    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        return None
    return {str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id")}


def _invalid(problems: list[FieldViolation], reason: str = "VALIDATION_ERROR") -> InvalidArgument:
    return InvalidArgument("; ".join(f"{p.field}: {p.description}" for p in problems), reason=reason,
                           field_violations=problems, metadata={"field": problems[0].field})


def _ollama_failed(e: OllamaError, step: str, source: str = "") -> Exception:
    if step == "pull" and (e.status in (404, 500, 200) and "does not exist" in e.message or e.status == 404):
        return NotFound(f"Ollama has no model {source[:NAME_MAX]!r} to pull: {e.message}", reason="SOURCE_NOT_FOUND",
                        metadata={"source": source[:NAME_MAX]}, field_violations=[FieldViolation("source", e.message)])
    if e.status == 0 and "unreachable" in e.message:
        return FailedPrecondition(f"the configured Ollama could not be reached to {step} the model ({e.message})",
                                  reason="OLLAMA_UNREACHABLE")
    return InvalidArgument(f"Ollama could not {step} the model: {e.message}", reason="SOURCE_REJECTED",
                           field_violations=[FieldViolation("source", e.message)], metadata={"field": "source"})
