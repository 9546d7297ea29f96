"""AIP-158 paging: page sizes, opaque page tokens, `skip` for REST offsets."""

from __future__ import annotations

import base64

from services.core.errors import FieldViolation, InvalidArgument


def window(page_size: int, page_token: str, skip: int, default: int = 50, maximum: int = 100) -> tuple[int, int]:
    """(offset, limit) for a list request; negative sizes and bad tokens are INVALID_ARGUMENT."""
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE",
                              field_violations=[FieldViolation("page_size", "must be >= 0")])
    if skip < 0:
        raise InvalidArgument("skip must not be negative", reason="INVALID_SKIP",
                              field_violations=[FieldViolation("skip", "must be >= 0")])
    limit = min(page_size or default, maximum)
    offset = decode(page_token) if page_token else 0
    return offset + skip, limit


def encode(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, num = raw.partition(":")
        if kind != "o" or not num.isdigit():
            raise ValueError
        return int(num)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN",
                              field_violations=[FieldViolation("page_token", "not a token this server issued")]) from None


def next_token(offset: int, limit: int, total: int) -> str:
    return encode(offset + limit) if offset + limit < total else ""
