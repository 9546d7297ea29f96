"""Keeps aiohttp's own request-error log lines free of header values.

aiohttp logs a refused request at ERROR with the parser's message, which quotes the offending
header line — a key sent with a stray CR or NUL would land in the log whole (RELIABILITY F3).
The filter rewrites such records to the error's class only.
"""

from __future__ import annotations

import logging


class _HeaderFree(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            kind = type(record.exc_info[1]).__name__
            record.msg, record.args = "Error handling request (%s)", (kind,)
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _HeaderFree) for f in log.filters):
        log.addFilter(_HeaderFree())
