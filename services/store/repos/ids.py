"""Row ids: a type prefix plus 16 random base62 characters (`usr_…`, `ak_…`, `pk_…`, `lm_…`)."""

from __future__ import annotations

import secrets

from services.core.base62 import BASE62

ID_RANDOM_LEN = 16
USER_PREFIX = "usr_"
API_KEY_PREFIX = "ak_"
PROVIDER_KEY_PREFIX = "pk_"
LOADED_MODEL_PREFIX = "lm_"


def new_id(prefix: str) -> str:
    # ~95 bits: unguessable, so an id alone never grants anything and collisions don't happen.
    return prefix + "".join(secrets.choice(BASE62) for _ in range(ID_RANDOM_LEN))
