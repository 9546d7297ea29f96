"""load_admin_key over a real store: the configured key wins; otherwise one is generated at the
first start, shown once, known to the scrubber, and only its hash is kept for later starts."""

from __future__ import annotations

from services.auth.admin_key import ADMIN_HASH_SETTING, load_admin_key
from services.auth.api_keys import hash_key
from services.core.scrub import Scrubber
from tests.services.store.conftest import PEPPER, dump_text


async def test_the_configured_key_wins_and_nothing_is_stored(store):
    info, digest = await load_admin_key(store, PEPPER, "configured-admin-key-0123", Scrubber())
    assert (info.source, info.plaintext) == ("env", "")
    assert digest == hash_key(PEPPER, "configured-admin-key-0123")
    assert await store.get_setting(ADMIN_HASH_SETTING) is None


async def test_generated_once_then_read_back_as_a_hash(make_store):
    first, scrubber = await make_store(), Scrubber()
    info, digest = await load_admin_key(first, PEPPER, "", scrubber)
    assert info.source == "generated" and info.plaintext.startswith("tga_") and len(info.plaintext) > 40
    assert digest == hash_key(PEPPER, info.plaintext)
    assert info.plaintext not in scrubber.scrub(f"echo {info.plaintext}")
    assert info.plaintext not in await dump_text(first) and digest in await dump_text(first)
    again, digest_again = await load_admin_key(await make_store(), PEPPER, "", Scrubber())  # a restart, a replica
    assert (again.source, again.plaintext, digest_again) == ("stored", "", digest)
