"""Authentication material and rules: the server secret, API keys, passwords, sealed provider keys."""

from services.auth.api_keys import hash_key, key_prefix, looks_valid, new_api_key, verify
from services.auth.passwords import hash_password, needs_rehash, verify_password
from services.auth.sealing import Sealer, SealError, key_id, mask
from services.auth.secrets import derive, load_or_create_secret

__all__ = [
    "SealError",
    "Sealer",
    "derive",
    "hash_key",
    "hash_password",
    "key_id",
    "key_prefix",
    "load_or_create_secret",
    "looks_valid",
    "mask",
    "needs_rehash",
    "new_api_key",
    "verify",
    "verify_password",
]
