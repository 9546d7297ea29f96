"""services/core/json_bound.py: the E2 count the bridge and the pass-through share."""

from __future__ import annotations

from services.core.json_bound import MAX_JSON_CONTAINERS, SCAN_FLOOR_BYTES, costly_values


def test_small_bodies_are_not_scanned_and_large_ones_count_every_costly_byte() -> None:
    small = b"[" * (SCAN_FLOOR_BYTES // 2)
    assert costly_values(small) == 0  # under the floor: cannot hold too many, not scanned
    big = b'{"a":[' * (SCAN_FLOOR_BYTES // 6 + 1)
    assert costly_values(big) == 3 * (SCAN_FLOOR_BYTES // 6 + 1)  # {, : and [ each count, inside strings too
    assert costly_values(b"[]," * (MAX_JSON_CONTAINERS + 1)) > MAX_JSON_CONTAINERS
    assert costly_values(b'"' + b"x" * (4 * SCAN_FLOOR_BYTES) + b'"') == 0  # plain text is free
