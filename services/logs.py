"""Logging set-up, with a last-line redaction filter for every secret the process knows.

No code path logs a key on purpose; this filter makes sure a stray one (in an exception
text from a library, say) is masked before any handler writes it (RELIABILITY F3).
"""

from __future__ import annotations

import logging
import sys


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 8 and secret not in self.secrets:
            self.secrets.append(secret)
            self.secrets.sort(key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        msg = record.getMessage()
        text = msg + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        if any(s in text for s in self.secrets):
            for s in self.secrets:
                msg = msg.replace(s, "[REDACTED]")
            record.msg, record.args = msg, None
            record.exc_info = None  # the traceback held the secret: drop it rather than leak it
            record.exc_text = None
        return True


def setup_logging(level: str, secrets: list[str]) -> RedactSecrets:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redact = RedactSecrets(secrets)
    handler.addFilter(redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # peewee logs query parameters at DEBUG: key hashes and sealed values must not reach a log.
    logging.getLogger("peewee").setLevel(max(logging.INFO, root.level))
    return redact
