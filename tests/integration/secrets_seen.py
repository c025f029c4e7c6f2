"""Every secret the suite handled, and where to look for it afterwards (the leak check).

The development issuer lists every token it issued (`facility.issuer.issued_tokens_path`);
tests add the other secrets they handle (Hub API tokens, cluster secrets, forged tokens) with
:func:`remember`. The client's own log records go to :data:`CLIENT_LOG` for the whole session
(see ``tests/conftest.py``), so they can be searched like the daemons' logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from rjq_facility import issuer
from rjq_facility.config import FacilityConfig

#: The secrets tests handled beyond the issuer's own tokens.
_REMEMBERED: set[str] = set()
#: The client side's log (every logger, DEBUG), written by the session's handler.
#: One per test session (by the pytest process's pid): two sessions on one machine must not
#: clobber each other's log, which the leak check searches.
CLIENT_LOG = Path(f"/tmp/remote-jobqueue-test-client-{os.getpid()}.log")
#: Anything that looks like a JWT or a private key: none should be in a log line or a job ad,
#: ours or not.
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
KEY_MARK = "PRIVATE KEY-----"


def remember(*secrets: str | None) -> None:
    _REMEMBERED.update(s.strip() for s in secrets if s and len(s.strip()) >= 12)


def suite_secrets(cfg: FacilityConfig) -> set[str]:
    """Every token the issuer issued, the users' passwords and client secrets, and what tests
    remembered."""
    path = issuer.issued_tokens_path(cfg.state_dir)
    found = set(path.read_text().split()) if path.exists() else set()
    found |= {issuer.user_password(cfg, user) for user in cfg.users}
    found |= {secret for secret in (issuer.client_secret(cfg),) if secret}
    return {s for s in found | _REMEMBERED if len(s) >= 12}


def leaks(texts: Iterable[tuple[str, str]], secrets: set[str]) -> Iterator[str]:
    """``where: what`` for each text that holds a secret or a JWT (the secret never shown)."""
    for where, text in texts:
        for found in JWT_RE.findall(text):
            yield f"{where}: a JWT ({found[:12]}…)"
        if KEY_MARK in text:
            yield f"{where}: a private key"
        for secret in secrets:
            if secret in text:
                yield f"{where}: a secret of the suite ({secret[:6]}…)"
