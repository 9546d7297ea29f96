"""ModelService: the routable catalogue, thin over routing/routable.py."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from services.catalog.pricing import ModelInfo
from services.config.schema import Config
from services.config.kinds import resolve
from services.core.errors import NotFound
from services.loading.loader import LoadRequest, ModelLoader, Progress
from services.loading.registry import LoadedModel, LoadedModels
from services.routing.routable import ModelCatalog
from services.routing.router import Router
from services.rpc import paging
from services.rpc.interceptors import Ctx, Guard, stream, unary
from tollgate.v1 import model_service_pb2 as mpb
from tollgate.v1 import model_service_pb2_grpc as mpb_grpc


def model_pb(info: ModelInfo, providers: list[str], vendor: str = "") -> mpb.Model:
    return mpb.Model(vendor=vendor,
        id=info.id, name=info.name or info.id, description=info.description, providers=providers,
        owned_by=info.owned_by or (providers[0] if providers else ""), context_length=info.context_length,
        max_completion_tokens=info.max_completion_tokens,
        pricing=mpb.Pricing(prompt_per_mtok=info.prompt_per_mtok, completion_per_mtok=info.completion_per_mtok),
        supported_parameters=list(info.supported_parameters), is_moderated=info.is_moderated, kind=info.kind,
        demo=info.owned_by == "tollgate" and info.id in ("demo", "tollgate-demo"), created=1_700_000_000,
    )


def loaded_pb(m: LoadedModel) -> mpb.Model:
    pb = model_pb(m.info, list(m.providers), m.info.owned_by)
    pb.loaded = True
    pb.created = int(m.record.created_at)
    return pb


def _matches(m: LoadedModel, r: mpb.ListModelsRequest) -> bool:
    if r.vendor and m.info.owned_by != r.vendor.lower():
        return False
    if r.provider and r.provider.lower() not in m.providers and not any(t.kind == r.provider for t, _, _ in m.targets):
        return False
    t = r.search.lower()
    return not t or t in m.info.id.lower() or t in m.info.description.lower()


def load_request(r: mpb.LoadModelRequest | mpb.StreamLoadModelRequest) -> LoadRequest:
    return LoadRequest(source=r.source, format=r.format, name=r.name, model=r.model, api_key=r.api_key)


def progress_pb(p: Progress) -> mpb.LoadProgress:
    return mpb.LoadProgress(status=p.status, digest=p.digest, total=p.total, completed=p.completed)


def public_url(url: str) -> str:
    """A base URL with nothing secret left in it: no user:password@, query or fragment (some
    providers take a key as ?key=...). ListProviders needs no key (seed 002's GET /backend/info)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class ModelServicer(mpb_grpc.ModelServiceServicer):
    """The routable catalogue (configured and loaded models), the providers, and model loads."""

    def __init__(self, guard: Guard, config: Config, models: ModelCatalog, loaded: LoadedModels, router: Router,
                 loader: ModelLoader) -> None:
        self.guard = guard
        self.config = config
        self.models = models
        self.loaded = loaded
        self.router = router
        self.loader = loader

    @unary(open_kind="catalog")
    async def ListModels(self, request: mpb.ListModelsRequest, ctx: Ctx) -> mpb.ListModelsResponse:
        offset, limit = paging.window(request.page_size, request.page_token, request.skip)
        found = [model_pb(i, ps, self.models.vendor(i, ps))
                 for i, ps in self.models.search(request.provider, request.search, request.order_by, request.vendor)]
        loaded = [loaded_pb(m) for m in self.loaded.all() if _matches(m, request)]
        if loaded:  # every listing shows loaded models under their names (issue 19)
            found = sorted(found + loaded, key=(lambda m: (-m.context_length, m.id)) if request.order_by == "context_length"
                           else (lambda m: m.id))
        page = found[offset: offset + limit]
        return mpb.ListModelsResponse(models=page, total_size=len(found),
                                      next_page_token=paging.next_token(offset, limit, len(found)))

    @unary(open_kind="catalog")
    async def GetModel(self, request: mpb.GetModelRequest, ctx: Ctx) -> mpb.GetModelResponse:
        loaded = self.loaded.get(request.id)
        if loaded is None and self.models.get(request.id) is None and await self.loaded.on_miss(request.id):
            loaded = self.loaded.get(request.id)  # loaded on another replica a moment ago
        if loaded is not None:
            return mpb.GetModelResponse(model=loaded_pb(loaded))
        entry = self.models.get(request.id)
        if entry is None:
            raise NotFound(f"The model '{request.id}' does not exist", reason="MODEL_NOT_FOUND", metadata={"model": request.id})
        return mpb.GetModelResponse(model=model_pb(*entry, self.models.vendor(*entry)))

    @unary(open_kind="catalog")
    async def ListVendors(self, request: mpb.ListVendorsRequest, ctx: Ctx) -> mpb.ListVendorsResponse:
        return mpb.ListVendorsResponse(vendors=self.models.vendors())

    @unary(public=True)
    async def ListProviders(self, request: mpb.ListProvidersRequest, ctx: Ctx) -> mpb.ListProvidersResponse:
        out = []
        for p in self.config.providers:
            k = resolve(p.kind)
            out.append(mpb.ProviderInfo(name=p.name, kind=p.kind, base_url=public_url(p.base_url), models=list(p.models),
                                        priority=p.priority, key_count=len(p.keys),
                                        unsupported=list(k.unsupported) if k else []))
        return mpb.ListProvidersResponse(providers=out, strategy=self.router.default_strategy)

    @unary(peek_limits=False)
    async def LoadModel(self, request: mpb.LoadModelRequest, ctx: Ctx) -> mpb.LoadModelResponse:
        progress: list[mpb.LoadProgress] = []
        async for step in self.loader.load(load_request(request), ctx.principal):
            if isinstance(step, Progress):
                progress.append(progress_pb(step))
            else:
                return mpb.LoadModelResponse(model=loaded_pb(step), progress=progress)
        raise RuntimeError("the loader ended without a model")

    @stream()
    async def StreamLoadModel(self, request: mpb.StreamLoadModelRequest, ctx: Ctx):
        async for step in self.loader.load(load_request(request), ctx.principal):
            if isinstance(step, Progress):
                yield mpb.StreamLoadModelResponse(progress=progress_pb(step))
            else:
                yield mpb.StreamLoadModelResponse(model=loaded_pb(step))

    @unary(peek_limits=False)
    async def UnloadModel(self, request: mpb.UnloadModelRequest, ctx: Ctx) -> mpb.UnloadModelResponse:
        return mpb.UnloadModelResponse(model=loaded_pb(await self.loader.unload(request.name, ctx.principal)))
