"""Session tokens: format, signature, expiry, tampering, and the authenticator's session path."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from services.auth import sessions as sessions_mod
from services.auth.authenticator import Authenticator
from services.auth.secrets import derive
from services.auth.sessions import DEFAULT_TTL_S, PREFIX, Sessions
from services.clock import FakeClock
from services.config.schema import Config, StaticKey
from services.core.errors import PermissionDenied, Unauthenticated
from services.store.records import SessionRecord, UserRecord

KEY = derive(bytes(range(32)), "session")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sessions(clock: FakeClock) -> Sessions:
    return Sessions(KEY, clock)


def _parts(token: str) -> tuple[str, str]:
    body, _, sig = token.rpartition(".")
    return body, sig


def test_issue_then_verify(sessions: Sessions, clock: FakeClock) -> None:
    token, expires = sessions.issue("usr_1", "admin")
    assert token.startswith(PREFIX) and token.count(".") == 1
    assert expires == int(clock.now() + DEFAULT_TTL_S)
    s = sessions.verify(token)
    assert s is not None and (s.user_id, s.role, s.expires_at) == ("usr_1", "admin", expires)
    # Two logins give two different tokens (a nonce), both valid.
    assert sessions.issue("usr_1", "admin")[0] != token


def test_payload_is_readable_base64url_json(sessions: Sessions) -> None:
    token, _ = sessions.issue("usr_1", "user")
    body, sig = _parts(token)
    claims = json.loads(base64.urlsafe_b64decode(body[len(PREFIX):] + "=="))
    assert claims["u"] == "usr_1" and claims["r"] == "user" and claims["v"] == 1
    assert "=" not in token and len(base64.urlsafe_b64decode(sig + "=")) == 32  # HMAC-SHA256


def test_expiry(sessions: Sessions, clock: FakeClock) -> None:
    token, _ = sessions.issue("usr_1", "user", ttl_s=60)
    clock.advance(59)
    assert sessions.verify(token) is not None
    clock.advance(1)
    assert sessions.verify(token) is None
    assert sessions.verify(sessions.issue("usr_1", "user", now=clock.now() - 10, ttl_s=5)[0]) is None


def test_tampering_and_other_keys_fail(sessions: Sessions, clock: FakeClock) -> None:
    token, _ = sessions.issue("usr_1", "user")
    body, sig = _parts(token)
    claims = json.loads(base64.urlsafe_b64decode(body[len(PREFIX):] + "=="))
    claims["r"] = "admin"
    forged = PREFIX + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert sessions.verify(f"{forged}.{sig}") is None
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert sessions.verify(f"{body}.{flipped}") is None
    # The same signature bytes spelled otherwise (the last character's two spare bits) are refused too.
    spare = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = spare.index(sig[-1])
    for twin in {spare[(i & ~3) | k] for k in range(4)} - {sig[-1]}:
        assert sessions.verify(f"{body}.{sig[:-1]}{twin}") is None
    other = Sessions(derive(bytes(range(1, 33)), "session"), clock)
    assert other.verify(token) is None
    assert Sessions(derive(bytes(range(32)), "api-key-pepper"), clock).verify(token) is None


@pytest.mark.parametrize("junk", ["", "tgs_", "tgs_.", "tgs_abc", "tgs_abc.def", "tgs_a.b.c", "tg_abc.def",
                                  "tgs_é.x", "tgs_\x00.x", "tgs_" + "A" * 5000 + ".x", "tgs_abc.=", "Bearer tgs_x.y"])
def test_malformed_tokens_are_none(sessions: Sessions, junk: str) -> None:
    assert sessions.verify(junk) is None


def test_issue_refuses_bad_input(sessions: Sessions) -> None:
    with pytest.raises(ValueError):
        sessions.issue("", "user")
    with pytest.raises(ValueError):
        sessions.issue("usr_1", "root")
    with pytest.raises(ValueError):
        Sessions(b"short", FakeClock())


def test_verification_uses_compare_digest(sessions: Sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = sessions_mod.hmac.compare_digest
    monkeypatch.setattr(sessions_mod.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    token, _ = sessions.issue("usr_1", "user")
    assert sessions.verify(token) is not None
    assert sessions.verify(token[:-2] + "AA") is None
    assert len(calls) == 2  # F4: every signature check goes through compare_digest


def test_repr_hides_key(sessions: Sessions) -> None:
    assert KEY.hex() not in repr(sessions) and "ttl" in repr(sessions)


# --- the authenticator's session path ---------------------------------------------------------

class FakeStore:
    def __init__(self) -> None:
        self.users: dict[str, UserRecord] = {}
        self.rows: dict[str, SessionRecord] = {}
        self.lookups = 0

    def open(self, sessions: Sessions, user_id: str, role: str) -> str:
        """A token with its session row, as SignIn.start makes them (issue 16)."""
        sid = f"ses_{len(self.rows)}"
        token, expires = sessions.issue(user_id, role, session_id=sid)
        self.rows[sid] = SessionRecord(sid, user_id, role, 0.0, expires)
        return token

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return self.rows.get(session_id)

    async def touch_session(self, session_id: str) -> None:
        pass

    async def get_user(self, user_id: str) -> UserRecord | None:
        self.lookups += 1
        return self.users.get(user_id)

    async def find(self, key: str):  # the key vault's lookup: no issued keys here
        return None


def _auth(clock: FakeClock, sessions: Sessions | None, store: FakeStore, **cfg) -> Authenticator:
    config = dataclasses.replace(Config(), **cfg)
    return Authenticator(config, store, store, b"pepper-0123456789", clock, "", sessions=sessions)


async def test_authenticator_accepts_sessions(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    store.users["usr_a"] = UserRecord("usr_a", "a@example.com", "user", "pro", clock.now())
    auth = _auth(clock, sessions, store)
    token = store.open(sessions, "usr_a", "user")
    p = await auth.resolve({"authorization": f"Bearer {token}"})
    assert (p.kind, p.user_id, p.role, p.tier, p.key_id) == ("session", "usr_a", "user", "pro", "usr_a")
    assert (await auth.resolve({"x-api-key": token})).user_id == "usr_a"
    # One account lookup per second, not per request.
    for _ in range(5):
        await auth.resolve({"authorization": f"Bearer {token}"})
    assert store.lookups == 1
    with pytest.raises(PermissionDenied):
        await auth.resolve({"authorization": f"Bearer {token}"}, admin_only=True)


async def test_admin_session_passes_admin_routes_and_demotion_applies(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    store.users["usr_root"] = UserRecord("usr_root", "r@example.com", "admin", "basic", clock.now())
    auth = _auth(clock, sessions, store)
    token = store.open(sessions, "usr_root", "admin")
    p = await auth.resolve({"authorization": f"Bearer {token}"}, admin_only=True)
    assert p.is_admin and p.kind == "session"
    store.users["usr_root"] = dataclasses.replace(store.users["usr_root"], role="user")
    clock.advance(1.01)
    with pytest.raises(PermissionDenied):
        await auth.resolve({"authorization": f"Bearer {token}"}, admin_only=True)


async def test_disabled_or_deleted_users_are_refused_within_a_second(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    store.users["usr_a"] = UserRecord("usr_a", "a@example.com", "user", "basic", clock.now())
    auth = _auth(clock, sessions, store)
    token = store.open(sessions, "usr_a", "user")
    md = {"authorization": f"Bearer {token}"}
    await auth.resolve(md)
    store.users["usr_a"] = dataclasses.replace(store.users["usr_a"], disabled=True)
    clock.advance(1.01)
    with pytest.raises(Unauthenticated):
        await auth.resolve(md)
    del store.users["usr_a"]
    auth.forget()
    with pytest.raises(Unauthenticated):
        await auth.resolve(md)


async def test_bad_sessions_fall_back_to_the_old_paths(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    # A static AUTH_KEY that happens to look like a session still works exactly as before.
    auth = _auth(clock, sessions, store, static_keys=(StaticKey("AUTH_KEY", "tgs_operator.chosen"),))
    p = await auth.resolve({"authorization": "Bearer tgs_operator.chosen"})
    assert p.kind == "static"
    for bad in ("tgs_garbage.sig", sessions.issue("usr_ghost", "user")[0]):
        with pytest.raises(Unauthenticated):
            await auth.resolve({"authorization": f"Bearer {bad}"})
        with pytest.raises(Unauthenticated):
            await auth.resolve({"authorization": f"Bearer {bad}"}, admin_only=True)


async def test_without_sessions_configured_nothing_changes(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    store.users["usr_a"] = UserRecord("usr_a", "a@example.com", "admin", "basic", clock.now())
    auth = _auth(clock, None, store)
    token, _ = sessions.issue("usr_a", "admin")
    with pytest.raises(Unauthenticated):
        await auth.resolve({"authorization": f"Bearer {token}"})
    assert store.lookups == 0


async def test_a_revoked_session_or_one_without_a_row_is_refused(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    store.users["usr_a"] = UserRecord("usr_a", "a@example.com", "user", "basic", clock.now())
    auth = _auth(clock, sessions, store)
    rowless, _ = sessions.issue("usr_a", "user")  # signed, but names no session row
    with pytest.raises(Unauthenticated):
        await auth.resolve({"authorization": f"Bearer {rowless}"})
    token = store.open(sessions, "usr_a", "user")
    md = {"authorization": f"Bearer {token}"}
    assert (await auth.resolve(md)).session_id == "ses_0"
    store.rows["ses_0"] = dataclasses.replace(store.rows["ses_0"], revoked_at=clock.now())
    assert (await auth.resolve(md)).user_id == "usr_a"  # within the one-second cache
    clock.advance(1.01)
    with pytest.raises(Unauthenticated):
        await auth.resolve(md)


async def test_cookie_writes_need_the_sessions_csrf_token(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    store.users["usr_a"] = UserRecord("usr_a", "a@example.com", "user", "basic", clock.now())
    auth = _auth(clock, sessions, store)
    token = store.open(sessions, "usr_a", "user")
    other = store.open(sessions, "usr_a", "user")
    md = {"authorization": f"Bearer {token}"}
    for bad in ("", "x" * 32, sessions.csrf("ses_1")):
        with pytest.raises(PermissionDenied) as e:
            await auth.resolve({**md, "x-tollgate-csrf": bad})
        assert e.value.reason == "CSRF"
    assert (await auth.resolve({**md, "x-tollgate-csrf": sessions.csrf("ses_0")})).user_id == "usr_a"
    assert other != token


async def test_operator_sessions_are_the_admin(clock: FakeClock, sessions: Sessions) -> None:
    store = FakeStore()
    auth = _auth(clock, sessions, store)
    token = store.open(sessions, "operator", "admin")
    p = await auth.resolve({"authorization": f"Bearer {token}"}, admin_only=True)
    assert (p.kind, p.is_admin, p.session_id, p.user_id) == ("admin", True, "ses_0", "")
