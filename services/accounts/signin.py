"""Sign-in sessions: a row per sign-in behind each `tgs_` token, so any session can be revoked.

Starting a session writes its row and signs a token naming it; ending one (logout, a session
list's revoke, a password/role/plan/state change) marks rows revoked and drops this replica's
cache at once, while other replicas stop honouring the token within the authenticator's
one-second cache (the figure is measured in tests/services/accounts/test_sessions_replicas.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.auth.authenticator import OPERATOR, Authenticator
from services.auth.sessions import Sessions
from services.clock import Clock
from services.store.records import SessionRecord
from services.store.repos.ids import new_id

SESSION_ID_PREFIX = "ses_"
USER_AGENT_MAX = 300
IP_MAX = 100


@dataclass(slots=True, frozen=True)
class Started:
    """What a new session hands the caller once: the token, its expiry, its CSRF token and id."""

    token: str
    expires_at: float
    csrf_token: str
    session_id: str


class SignIn:
    def __init__(self, store, sessions: Sessions, auth: Authenticator, clock: Clock) -> None:
        self.store = store
        self.sessions = sessions
        self.auth = auth
        self.clock = clock

    async def start(self, user_id: str, role: str, user_agent: str = "", ip: str = "") -> Started:
        sid = new_id(SESSION_ID_PREFIX)
        now = self.clock.now()
        token, expires_at = self.sessions.issue(user_id, role, now=now, session_id=sid)
        await self.store.insert_session(SessionRecord(
            id=sid, user_id=user_id, role=role, created_at=now, expires_at=expires_at, last_used_at=now,
            user_agent=_clean(user_agent, USER_AGENT_MAX), ip=_clean(ip, IP_MAX)))
        return Started(token, expires_at, self.sessions.csrf(sid), sid)

    async def start_operator(self, user_agent: str = "", ip: str = "") -> Started:
        return await self.start(OPERATOR, "admin", user_agent, ip)

    async def end(self, session_id: str, user_id: str | None = None) -> bool:
        """Revoke one session (with `user_id`: only if it is that user's)."""
        done = await self.store.revoke_session(session_id, user_id)
        self.auth.forget_sessions()
        return done

    async def end_all(self, user_id: str, except_id: str = "") -> int:
        """Revoke every session of a user (but `except_id`)."""
        n = await self.store.revoke_sessions(user_id, except_id)
        self.auth.forget_sessions()
        return n

    async def list(self, user_id: str) -> list[SessionRecord]:
        return await self.store.list_sessions(user_id)


def _clean(text: str, n: int) -> str:
    return "".join(c for c in text[:n] if c.isprintable())
