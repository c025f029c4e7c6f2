"""Gateway logins with a JupyterHub API token, checked against the Hub (with a cache).

A plain ``ssh`` client cannot send an IAM access token (OpenSSH truncates passwords at 1023
characters); a JupyterHub API token is short. The Hub answers ``GET /hub/api/user`` with the
token's owner and scopes. Two rules make such a login as good as the user's own JWT, no more:

- the token must hold :data:`GATEWAY_SCOPE` for its owner: a custom scope only the user's own
  server and clients are given (see `remote_jobqueue.spawner.authhooks`), so a token a shared
  server receives from a visitor, or any token made for something else, is refused;
- the owner maps to the *same* identity as their JWTs, the issuer's subject: the Hub keeps it in
  the user's ``auth_state`` (``oauth_user.sub``), which the gateway reads with a service token
  of its own (``admin:auth_state`` and ``read:users``), so the user's token need not be able to
  read the user's OAuth tokens.

Answers are cached by a hash of the token (never the token) for ``ttl`` seconds, so a tunnel
reconnecting often does not hammer the Hub. A login lasts until ``recheck`` seconds after the
Hub last vouched for the token, so a revoked token's connections end within ``recheck``.
Checks run on a small pool of their own, and beyond ``max_pending`` waiting checks new logins
are turned away at once (temporary), so a flood of logins cannot hold the gateway's threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .auth import AuthenticationFailed, Identity
from .protocol import GATEWAY_SCOPE

__all__ = ["GATEWAY_SCOPE", "HubTokenAuthenticator", "holds_gateway_scope"]

#: JupyterHub API tokens: 32 hex (old) or prefixed url-safe tokens (4.x+); never a JWT.
_HUB_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


def holds_gateway_scope(scopes: list[str], owner: str) -> bool:
    """True if ``scopes`` (as the Hub expands them) grant :data:`GATEWAY_SCOPE` for ``owner``."""
    return GATEWAY_SCOPE in scopes or f"{GATEWAY_SCOPE}!user={owner}" in scopes


class HubTokenAuthenticator:
    """Accepts JupyterHub API tokens of *users* (not services), checked against ``hub_api_url``.

    ``issuer`` is the OIDC issuer the Hub logs users in with: with the subject from
    ``auth_state``, the identity their JWTs have.
    """

    def __init__(
        self,
        hub_api_url: str,
        issuer: str,
        *,
        service_token: str | None = None,
        ttl: float = 60.0,
        recheck: float = 300.0,
        timeout: float = 10.0,
        max_entries: int = 10_000,
        threads: int = 4,
        max_pending: int = 32,
    ) -> None:
        if not 0 < ttl <= recheck:
            raise ValueError(f"want 0 < ttl ({ttl}) <= recheck ({recheck})")
        self.api = hub_api_url.rstrip("/")
        self.issuer = issuer
        self.service_token = service_token
        self.ttl = ttl
        self.recheck = recheck
        self.timeout = timeout
        self.max_entries = max_entries
        self.max_pending = max_pending
        #: token digest → ((name, subject), when the Hub vouched for it: wall clock)
        self._cache: dict[str, tuple[tuple[str, str], float]] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="hub-check")
        self._pending = 0
        self._lock = threading.Lock()

    def _get(self, path: str, secret: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.api + path,
            headers={"Authorization": f"token {secret}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code in (401, 403):
                raise AuthenticationFailed("the Hub does not know this token") from None
            raise AuthenticationFailed(
                f"the Hub answered {err.code}", temporary=err.code >= 500
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise AuthenticationFailed(
                f"cannot check the token with the Hub now: {err}", temporary=True
            ) from None

    def _whoami(self, secret: str) -> tuple[str, str]:
        """(name, subject) of the token's owner, or why not."""
        model = self._get("/user", secret)
        name = model.get("name")
        if model.get("kind", "user") != "user" or not isinstance(name, str):
            raise AuthenticationFailed("the token does not belong to a Hub user")
        if not holds_gateway_scope(list(model.get("scopes") or []), name):
            raise AuthenticationFailed(
                f"the token lacks the scope {GATEWAY_SCOPE} (only {name}'s own server and "
                "clients hold it)"
            )
        reader = self.service_token or secret
        try:
            user = self._get(f"/users/{urllib.parse.quote(name, safe='')}", reader)
        except AuthenticationFailed as err:
            if err.temporary:
                raise
            whose = "the gateway's service token" if self.service_token else "the token"
            raise AuthenticationFailed(f"{whose} may not read {name}'s auth_state") from None
        subject = ((user.get("auth_state") or {}).get("oauth_user") or {}).get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed(
                f"the Hub holds no subject for {name} (auth_state.oauth_user.sub): log in to "
                "the Hub again"
            )
        return name, subject

    async def _check(self, secret: str) -> tuple[str, str]:
        with self._lock:
            if self._pending >= self.max_pending:
                raise AuthenticationFailed(
                    "the gateway is busy checking Hub tokens: try again", temporary=True
                )
            self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._whoami, secret)
        finally:
            with self._lock:
                self._pending -= 1

    async def authenticate(self, username: str, secret: str) -> Identity:
        if not _HUB_TOKEN_RE.match(secret):
            raise AuthenticationFailed("not a JupyterHub API token")
        key = hashlib.sha256(secret.encode()).hexdigest()
        now = time.time()
        cached = self._cache.get(key)
        if cached and now - cached[1] < self.ttl:
            owner, vouched = cached
        else:
            owner, vouched = await self._check(secret), time.time()
            if len(self._cache) >= self.max_entries:
                self._cache = {k: v for k, v in self._cache.items() if now - v[1] < self.ttl}
            self._cache[key] = (owner, vouched)
        name, subject = owner
        return Identity(self.issuer, subject, name, vouched + self.recheck)
