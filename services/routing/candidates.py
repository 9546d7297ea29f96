"""Which (provider, key, model) triples may serve a model, precomputed from the config.

Resolution of a requested model name:
- "provider/model" where `provider` is a configured provider name → only that provider;
- otherwise every provider whose allow-list holds the model, plus wildcard providers (no
  allow-list), which pass any model upstream;
- "" → the default model of the first provider that has one.
Nothing to route to is MODEL_NOT_FOUND (404) for a model the catalogue does not know, and
NO_ELIGIBLE_KEY (FAILED_PRECONDITION, 400; seed 001) for one it knows but no key here serves.
A `provider` routing hint ("openai", or "auto"/"" for any) narrows the set further.
Views are built once per (model, provider hint) and cached, so a request with 100 providers
× 10 keys costs a dict lookup, not a thousand object constructions. They are stored in priority
order (stable, so declaration order within a level): every strategy sorts by priority first,
and sorting an already sorted list is one linear pass (bench/routing_decision.py).
A key's weight is its own, or its provider's when the key has none of its own (1.0).
"""

from __future__ import annotations

import dataclasses

from services.catalog.pricing import Catalog
from services.config.schema import Config, ProviderConfig, ProviderKeyConfig
from services.core.errors import FailedPrecondition, InvalidArgument, NotFound
from services.core.types import Target
from services.routing.strategies.base import CandidateView


ALIAS_BAND = 1_000_000  # priority added per position in an alias: earlier members always come first


class CandidateIndex:
    def __init__(self, cfg: Config, catalog: Catalog) -> None:
        self._providers = {p.name: p for p in cfg.providers}
        self._catalog = catalog
        self._exact: dict[str, list[ProviderConfig]] = {}
        self._wildcard: list[ProviderConfig] = []
        for p in cfg.providers:
            if p.models:
                for m in p.models:
                    self._exact.setdefault(m, []).append(p)
            else:
                self._wildcard.append(p)
        self._cache: dict[tuple[str, str], list[CandidateView]] = {}
        self.aliases: dict[str, tuple[str, ...]] = dict(cfg.model_aliases)
        self.default_model = next((p.default_model for p in sorted(cfg.providers, key=lambda p: p.priority) if p.default_model), "")

    @property
    def providers(self) -> dict[str, ProviderConfig]:
        return self._providers

    def catalog_get(self, model: str):
        return self._catalog.get(model)

    def lists(self, model: str) -> bool:
        """Whether an allow-list names `model` (or its provider/ prefix names a provider)."""
        return model in self._exact or model.partition("/")[0] in self._providers

    def known_models(self) -> list[tuple[str, ProviderConfig]]:
        """Every explicitly allowed model with a provider that serves it (for the catalogue)."""
        return [(m, p) for m, ps in self._exact.items() for p in ps]

    def resolve(self, model: str, provider_hint: str = "") -> list[CandidateView]:
        key = (model, provider_hint)
        views = self._cache.get(key)
        if views is None:
            views = self._build(model, provider_hint)
            if len(self._cache) < 4096:  # unbounded model names must not grow memory
                self._cache[key] = views
        return views

    def _alias(self, members: tuple[str, ...], hint: str, alias: str) -> list[CandidateView]:
        """A fallback group: each member's candidates in the alias's order (priority bands keep it
        through every strategy, which sorts by priority first); members nothing here serves are skipped."""
        views: list[CandidateView] = []
        for i, member in enumerate(members):
            try:
                found = self._build(member, hint)
            except (NotFound, FailedPrecondition):
                continue
            views += [dataclasses.replace(v, priority=i * ALIAS_BAND + v.priority) for v in found]
        if not views:
            raise NotFound(f"no model of alias {alias!r} is routable here", reason="MODEL_NOT_FOUND", metadata={"model": alias})
        return views

    def _build(self, model: str, hint: str) -> list[CandidateView]:
        model = model or self.default_model
        members = self.aliases.get(model)
        if members is not None:
            return self._alias(members, hint, model)
        if not model:
            raise InvalidArgument("model is required", reason="MODEL_REQUIRED", metadata={"field": "model"})
        hint = "" if hint in ("", "auto") else hint
        prefix, sep, rest = model.partition("/")
        pairs: list[tuple[ProviderConfig, str]]
        if sep and prefix in self._providers and (not hint or hint == prefix):
            p = self._providers[prefix]
            if p.models and rest not in p.models:
                raise NotFound(f"model {model!r} is not served by provider {prefix!r}", reason="MODEL_NOT_FOUND", metadata={"model": model})
            pairs = [(p, rest)]
        else:
            pairs = [(p, model) for p in self._exact.get(model, ())] + [(p, model) for p in self._wildcard]
        if hint:
            if hint not in self._providers and not any(p.kind == hint for p in self._providers.values()):
                raise NotFound(f"provider {hint!r} is not configured", reason="PROVIDER_NOT_FOUND", metadata={"provider": hint})
            pairs = [(p, m) for p, m in pairs if p.name == hint or p.kind == hint]
        if not pairs:
            if self._catalog.get(model) is not None:
                # Seed 001's NO_ELIGIBLE_KEY (400): a model that exists, but no configured key may
                # serve it here; "does not exist" (404) would send the caller looking for a typo.
                raise FailedPrecondition(f"no provider key is available for model {model!r}", reason="NO_ELIGIBLE_KEY",
                                         metadata={"model": model})
            raise NotFound(f"model {model!r} does not exist or is not routable", reason="MODEL_NOT_FOUND", metadata={"model": model})
        views = []
        for p, m in pairs:
            price = self._catalog.price(m)
            for k in p.keys:
                target = Target(provider=p.name, kind=p.kind, key_id=k.id, model=m, base_url=p.base_url, timeout_s=p.timeout_s)
                views.append(CandidateView(
                    target=target, priority=p.priority, weight=_weight(p, k),
                    price_in_per_mtok=price[0], price_out_per_mtok=price[1],
                ))
        views.sort(key=_priority)  # stable: declaration order kept within a level
        return views


def _weight(p: ProviderConfig, k: ProviderKeyConfig) -> float:
    """The key's own weight, else its provider's: `weight` is declared per provider (seed 002,
    the TOML table), and a key left at the default 1.0 must not silently drop it."""
    return k.weight if k.weight != 1.0 else p.weight


def _priority(v: CandidateView) -> int:
    return v.priority
