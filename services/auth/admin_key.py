"""The admin key: the configured one, or one generated at the first start and kept as a hash.

TOLLGATE_ADMIN_KEY wins when set. Otherwise the first start makes a `tga_` key, shows it once
(the start-up banner) and keeps only its HMAC under the API-key pepper in the store's settings;
later starts (and other replicas) read that hash back. The authenticator compares digests.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from services.auth.api_keys import hash_key
from services.core.scrub import Scrubber
from services.store.store import Store

ADMIN_HASH_SETTING = "admin_key_hash"
PREFIX = "tga_"


@dataclass(slots=True)
class AdminKeyInfo:
    source: str  # "env" | "generated" | "stored"
    plaintext: str = ""  # only when generated on this start: printed once


async def load_admin_key(store: Store, pepper: bytes, configured: str, scrubber: Scrubber) -> tuple[AdminKeyInfo, str]:
    """(where the admin key comes from, its digest for Authenticator.use_admin_hash)."""
    if configured:
        return AdminKeyInfo("env"), hash_key(pepper, configured)
    stored = await store.get_setting(ADMIN_HASH_SETTING)
    if stored:
        return AdminKeyInfo("stored"), stored
    key = PREFIX + secrets.token_urlsafe(32)
    scrubber.set("admin", key)
    digest = hash_key(pepper, key)
    await store.set_setting(ADMIN_HASH_SETTING, digest)
    return AdminKeyInfo("generated", key), digest
