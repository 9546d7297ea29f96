"""The audit log (issue 16): one row per admin action, written by the servicer that did it.

Who: "operator" for the admin key, else the acting user's id (and email when known). From
where: the bridge's forwarded client address, or the gRPC peer. Before/after: small JSON
objects of the changed record's plain fields; a secret (password, key, token) is never one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from services.core.principal import Principal
from services.store.records import AuditRecord
from services.store.repos.ids import new_id

log = logging.getLogger("tollgate.audit")
SECRET_FIELDS = frozenset(("password", "api_key", "key", "secret", "token", "invite_token", "session_token"))


def actor_of(p: Principal) -> str:
    if p.kind == "admin":
        return "operator"
    return p.user_id or p.key_id


def _json(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dict):
        v = {k: x for k, x in v.items() if k not in SECRET_FIELDS}
    return json.dumps(v, sort_keys=True, default=str)


class AuditLog:
    def __init__(self, store, clock) -> None:
        self.store = store
        self.clock = clock

    async def record(self, p: Principal, action: str, target: str, ip: str = "", before: Any = None,
                     after: Any = None) -> None:
        """Writes the row; a failure is logged, never turned into the action's failure (it is done)."""
        rec = AuditRecord(new_id("aud_"), actor_of(p), action, target, ip[:100], self.clock.now(), _json(before),
                          _json(after))
        try:
            await self.store.insert_audit(rec)
        except Exception as e:  # the action happened; say so loudly rather than hide it
            log.error("audit row not written for %s %s: %s", action, target, type(e).__name__)
