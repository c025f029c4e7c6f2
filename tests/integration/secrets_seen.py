"""Every secret the suite handled, and where to look for it afterwards (the leak check).

The development issuer lists every token it issued (`facility.issuer.issued_tokens_path`);
tests add the other secrets they handle (Hub API tokens, cluster secrets, forged tokens) with
:func:`remember`. The client's own log records go to :data:`CLIENT_LOG` for the whole session
(see ``tests/conftest.py``), so they can be searched like the daemons' logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from remote_jobqueue.facility import issuer
from remote_jobqueue.facility.config import FacilityConfig

#: The secrets tests handled beyond the issuer's own tokens.
_REMEMBERED: set[str] = set()
#: The client side's log (every logger, DEBUG), written by the session's handler.
CLIENT_LOG = Path("/tmp/remote-jobqueue-test-client.log")
#: Anything that looks like a JWT: none should be in a log line or a job ad, ours or not.
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def remember(*secrets: str | None) -> None:
    _REMEMBERED.update(s.strip() for s in secrets if s and len(s.strip()) >= 16)


def suite_secrets(cfg: FacilityConfig) -> set[str]:
    path = issuer.issued_tokens_path(cfg.state_dir)
    issued = set(path.read_text().split()) if path.exists() else set()
    return issued | _REMEMBERED


def leaks(texts: Iterable[tuple[str, str]], secrets: set[str]) -> Iterator[str]:
    """``where: what`` for each text that holds a secret or a JWT (the secret never shown)."""
    for where, text in texts:
        for found in JWT_RE.findall(text):
            yield f"{where}: a JWT ({found[:12]}…)"
        for secret in secrets:
            if secret in text:
                yield f"{where}: a secret of the suite ({secret[:6]}…)"
