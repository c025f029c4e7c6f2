"""Keeps bearer tokens out of logs: people paste them into the SSH user-name field.

asyncssh logs user names itself, so its logger gets a filter (on the gateway and on clients
alike); the gateway's own messages pass user names through :func:`loggable_name`.
"""

from __future__ import annotations

import logging
import re

from ..tokens import redact

_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
#: A Hub API token (or any random secret): long, letters and digits mixed, no dots or spaces.
_SECRET_LIKE_RE = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_-]{24,}$")
#: How asyncssh names the user in its own log lines.
_ASYNCSSH_USER_RE = re.compile(r"(for user )(\S+)")


def loggable_name(name: str) -> str:
    """A user name fit for logs: people do paste tokens (JWTs, Hub tokens) into the user-name
    field."""
    if len(name) > 64 or _SECRET_LIKE_RE.match(name) or _JWT_RE.search(name):
        return redact(name)
    return name


class _RedactJWTs(logging.Filter):
    """Replaces secret-shaped text in records: asyncssh logs user names, and a pasted token is
    one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = (
            _JWT_RE.sub(lambda m: redact(m.group()), message) if "eyJ" in message else message
        )
        redacted = _ASYNCSSH_USER_RE.sub(lambda m: m.group(1) + loggable_name(m.group(2)), redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put the JWT-redacting filter on asyncssh's logger (idempotent)."""
    logger = logger or logging.getLogger("asyncssh")
    if not any(isinstance(f, _RedactJWTs) for f in logger.filters):
        logger.addFilter(_RedactJWTs())
