"""Model aliases (fallback groups) at run time (issue 18 point 6).

The config's [model_aliases] are the base; an admin adds, replaces or removes aliases at run time
(AdminService.SetModelAlias / DeleteModelAlias), stored as one JSON object in the store's
`settings` table under MODEL_ALIASES_SETTING. Each replica re-reads it every `refresh_s` (the way
run-time provider keys and loaded models are picked up) and, when it changed, swaps the candidate
index's aliases and the /v1/models catalogue; the replica that made the change applies it at once.
A run-time alias of the same name overrides the config's.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Mapping

from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.poller import Changes, Poller

if TYPE_CHECKING:
    from services.routing.candidates import CandidateIndex
    from services.routing.routable import ModelCatalog
    from services.store.store import Store

log = logging.getLogger(__name__)

MODEL_ALIASES_SETTING = "model_aliases"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
MAX_MEMBERS = 16


class RuntimeAliases:
    def __init__(self, store: Store, index: CandidateIndex, models: ModelCatalog,
                 config_aliases: Mapping[str, tuple[str, ...]], refresh_s: float = 1.0,
                 changes: Changes | None = None) -> None:
        self.store = store
        self.index = index
        self.models = models  # the same object everyone holds (the model servicer too)
        self.config: dict[str, tuple[str, ...]] = dict(config_aliases)
        self.runtime: dict[str, tuple[str, ...]] = {}
        self._raw: str | None = None
        self._poller = Poller("model-aliases", self.refresh, refresh_s, log, changes=changes)

    def all(self) -> list[tuple[str, tuple[str, ...], str]]:
        """(name, models, source) for every alias in effect, by name."""
        out = {n: (m, "config") for n, m in self.config.items()}
        out.update({n: (m, "runtime") for n, m in self.runtime.items()})
        return [(n, m, s) for n, (m, s) in sorted(out.items())]

    def validate(self, name: str, models: list[str]) -> tuple[str, tuple[str, ...]]:
        name = name.strip()
        problems: list[FieldViolation] = []
        if not _NAME.fullmatch(name):
            problems.append(FieldViolation("name", "1-128 characters: letters, digits, . _ : @ -, not starting with a sign"))
        members = tuple(m.strip() for m in models)
        if not members or len(members) > MAX_MEMBERS:
            problems.append(FieldViolation("models", f"1 to {MAX_MEMBERS} models, in the order they are tried"))
        index = self.index
        for i, m in enumerate(members):
            if not m or m == name or m in self.config or m in self.runtime:
                problems.append(FieldViolation(f"models[{i}]", f"{m[:256]!r} must be a model, not this or another alias"))
                continue
            try:
                index._build(m, "")  # uncached: an unknown name must not fill the cache
            except NotFound:
                problems.append(FieldViolation(f"models[{i}]", f"unknown model {m[:256]!r}: no provider here serves it"))
            except Exception:  # noqa: BLE001  (no key for it right now is still a known model)
                pass
        if problems:
            raise InvalidArgument("; ".join(f"{p.field}: {p.description}" for p in problems), reason="VALIDATION_ERROR",
                                  field_violations=problems)
        return name, members

    async def set(self, name: str, models: list[str]) -> tuple[str, tuple[str, ...]]:
        # Read first: another replica's change of the last second is kept, not overwritten (the
        # aliases are one stored object; two admins writing in the same instant still race).
        await self.refresh()
        name, members = self.validate(name, models)
        runtime = {**self.runtime, name: members}
        await self._save(runtime)
        return name, members

    async def delete(self, name: str) -> tuple[str, ...]:
        await self.refresh()
        members = self.runtime.get(name)
        if members is None:
            where = " (it is defined in the config file; edit that)" if name in self.config else ""
            raise NotFound(f"no run-time model alias {name[:128]!r}{where}", reason="ALIAS_NOT_FOUND",
                           metadata={"alias": name[:128]})
        await self._save({n: m for n, m in self.runtime.items() if n != name})
        return members

    async def _save(self, runtime: dict[str, tuple[str, ...]]) -> None:
        raw = json.dumps({n: list(m) for n, m in sorted(runtime.items())}, separators=(",", ":"))
        await self.store.set_setting(MODEL_ALIASES_SETTING, raw)
        self._apply(raw)

    async def refresh(self) -> None:
        raw = await self.store.get_setting(MODEL_ALIASES_SETTING, "")
        if raw != self._raw:
            self._apply(raw or "")

    def _apply(self, raw: str) -> None:
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            log.warning("stored model aliases are not JSON; keeping the ones in effect")
            return
        self._raw = raw
        self.runtime = {str(n): tuple(str(x) for x in m) for n, m in doc.items() if isinstance(m, list)}
        index = self.index
        index.aliases = {**self.config, **self.runtime}
        index._cache = {}
        self.models.rebuild()

    def start(self) -> None:
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()
