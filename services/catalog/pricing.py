"""The model catalogue's prices and limits, and the cost of a request from them.

Prices are USD per million tokens, from the providers' public price lists as shipped in
catalog/models.json; a model that is not listed costs 0 (and the ledger says so honestly).
Image and audio models are priced as the provider bills them where that is not tokens: per image
by "size/quality" (`per_image`), per million characters of input (`per_mchar`, speech) or per
minute of audio (`per_minute`, transcription); `price_note` says where a price comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    name: str = ""
    owned_by: str = ""
    description: str = ""
    context_length: int = 0
    max_completion_tokens: int = 0
    prompt_per_mtok: float = 0.0
    completion_per_mtok: float = 0.0
    kind: str = "chat"
    supported_parameters: tuple[str, ...] = field(default=())
    is_moderated: bool = False
    cache_read_per_mtok: float = 0.0  # prompt tokens read from the cache; 0 = not listed, priced as prompt
    cache_write_per_mtok: float = 0.0  # prompt tokens written to the cache; 0 = not listed, priced as prompt
    per_image: tuple[tuple[str, float], ...] = ()  # ("1024x1024/standard", USD per image), ...
    per_mchar: float = 0.0  # speech: USD per million characters of input
    per_minute: float = 0.0  # transcription: USD per minute of audio
    price_note: str = ""


class Catalog:
    def __init__(self, models: dict[str, ModelInfo]) -> None:
        self._models = models

    @classmethod
    def builtin(cls) -> "Catalog":
        raw = json.loads(resources.files("services.catalog").joinpath("models.json").read_text())
        models = {}
        for m in raw["models"]:
            info = ModelInfo(**{**m, "supported_parameters": tuple(m.get("supported_parameters", ())),
                                "per_image": tuple(m.get("per_image", {}).items())})
            models[info.id] = info
        return cls(models)

    def get(self, model: str) -> ModelInfo | None:
        info = self._models.get(model)
        if info is None and "/" in model:
            info = self._models.get(model.rsplit("/", 1)[1])
        return info

    def all(self) -> list[ModelInfo]:
        return list(self._models.values())

    def price(self, model: str) -> tuple[float, float]:
        info = self.get(model)
        return (info.prompt_per_mtok, info.completion_per_mtok) if info else (0.0, 0.0)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, cache_read: int = 0,
             cache_write: int = 0) -> float:
        """USD; cache reads and writes (parts of prompt_tokens) at their own prices where listed."""
        info = self.get(model)
        if info is None:
            return 0.0
        p_in = info.prompt_per_mtok
        cost = prompt_tokens * p_in + completion_tokens * info.completion_per_mtok
        if cache_read and info.cache_read_per_mtok:
            cost += cache_read * (info.cache_read_per_mtok - p_in)
        if cache_write and info.cache_write_per_mtok:
            cost += cache_write * (info.cache_write_per_mtok - p_in)
        return cost / 1_000_000

    def image_price(self, model: str, size: str, quality: str) -> float | None:
        """USD per image at this size and quality, or None when the catalogue has no per-image price.

        An unnamed size is the provider's default (1024x1024); an unnamed or "auto" quality is the
        model's first listed one ("standard" for DALL·E, "low" for gpt-image-1 as listed)."""
        info = self.get(model)
        if info is None or not info.per_image:
            return None
        table = dict(info.per_image)
        size = size if size and size != "auto" else "1024x1024"
        if quality and quality != "auto":
            return table.get(f"{size}/{quality}")
        for key, usd in info.per_image:
            if key.startswith(size + "/"):
                return usd
        return None
