"""The routable catalogue: which models this gateway can serve, with their metadata.

A model is listed when a provider's allow-list names it, or when a wildcard provider's kind
owns it in the shipped catalogue (an OpenAI key with no allow-list lists OpenAI's models).
"""

from __future__ import annotations

from dataclasses import replace

from services.catalog.pricing import Catalog, ModelInfo
from services.routing.candidates import CandidateIndex

KIND_OWNERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google", "mistral": "mistral",
               "deepseek": "deepseek", "demo": "tollgate", "ollama": "meta", "cerebras": "meta", "groq": "meta"}


VENDOR_ORDER = ("openai", "anthropic", "google", "meta", "mistral")


class ModelCatalog:
    def __init__(self, catalog: Catalog, index: CandidateIndex) -> None:
        self.catalog = catalog
        self.index = index
        self.rebuild()

    def rebuild(self) -> None:
        """Re-reads the index (its aliases change at run time: services/routing/aliases.py)."""
        catalog, index = self.catalog, self.index
        providers_of: dict[str, list[str]] = {}
        self._alias_info: dict[str, ModelInfo] = {}
        for model, p in index.known_models():
            providers_of.setdefault(model, []).append(p.name)
        for p in index.providers.values():
            if p.models:
                continue
            owner = KIND_OWNERS.get(p.kind)
            for info in catalog.all():
                if owner and info.owned_by == owner and "/" not in info.id:
                    providers_of.setdefault(info.id, []).append(p.name)
        for alias, members in index.aliases.items():  # aliases and fallback groups are models too (/v1/models)
            provs = [p for m in members for p in providers_of.get(m, [])]
            provs += [m.partition("/")[0] for m in members if m.partition("/")[0] in index.providers]
            if provs:
                providers_of[alias] = provs
                self._alias_info[alias] = ModelInfo(id=alias, name=alias, owned_by="tollgate",
                                                    description="alias: " + " → ".join(members))
        self.entries: list[tuple[ModelInfo, list[str]]] = []
        for model_id in sorted(providers_of):
            info = self._alias_info.get(model_id) or catalog.get(model_id) or ModelInfo(id=model_id, name=model_id)
            if info.id != model_id:
                info = replace(info, id=model_id)
            self.entries.append((info, sorted(set(providers_of[model_id]))))
        self._by_id = {info.id: (info, provs) for info, provs in self.entries}
        self._kind = {p.name: p.kind for p in index.providers.values()}

    def vendor(self, info: ModelInfo, providers: list[str]) -> str:
        """Seed 004's `provider`: who makes the model. "openai/gpt-4o" -> openai; else the catalogue's
        owner; else the owner its provider's kind implies (an Ollama model -> meta)."""
        prefix, sep, _ = info.id.partition("/")
        if sep and prefix:
            return prefix.lower()
        if info.owned_by:
            return info.owned_by
        for p in providers:
            owner = KIND_OWNERS.get(self._kind.get(p, ""))
            if owner:
                return owner
        return ""

    def vendors(self) -> list[str]:
        """Every vendor with a routable model: seed 004's order (openai, anthropic, google, meta,
        mistral) first, then the others by name."""
        found = {v for info, provs in self.entries if (v := self.vendor(info, provs))}
        return sorted(found, key=lambda v: (VENDOR_ORDER.index(v) if v in VENDOR_ORDER else len(VENDOR_ORDER), v))

    def get(self, model_id: str) -> tuple[ModelInfo, list[str]] | None:
        return self._by_id.get(model_id)

    def search(self, provider: str = "", text: str = "", order_by: str = "",
               vendor: str = "") -> list[tuple[ModelInfo, list[str]]]:
        out = self.entries
        if vendor:
            v = vendor.lower()
            out = [(i, ps) for i, ps in out if self.vendor(i, ps) == v]
        if provider:
            p = provider.lower()
            out = [(i, ps) for i, ps in out
                   if p in ps or p == i.owned_by or any(self._kind.get(x) == p for x in ps) or i.id.startswith(p + "/")]
        if text:
            t = text.lower()
            out = [(i, ps) for i, ps in out if t in i.id.lower() or t in i.name.lower() or t in i.description.lower()]
        if order_by == "context_length":
            out = sorted(out, key=lambda e: (-e[0].context_length, e[0].id))
        return out
