"""Keeps bearer tokens out of logs: people paste them into the SSH user-name field.

asyncssh logs user names itself, so its logger gets a filter (on the gateway and on clients
alike); the gateway's own messages pass user names through :func:`loggable_name`.
"""

from __future__ import annotations

import logging
import re

from ..tokens import redact

_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def loggable_name(name: str) -> str:
    """A user name fit for logs: people do paste tokens into the user-name field."""
    return name if len(name) <= 64 else redact(name)


class _RedactJWTs(logging.Filter):
    """Replaces JWT-shaped text in records: asyncssh logs user names, and a pasted token is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "eyJ" in message:
            record.msg, record.args = _JWT_RE.sub(lambda m: redact(m.group()), message), None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put the JWT-redacting filter on asyncssh's logger (idempotent)."""
    logger = logger or logging.getLogger("asyncssh")
    if not any(isinstance(f, _RedactJWTs) for f in logger.filters):
        logger.addFilter(_RedactJWTs())
