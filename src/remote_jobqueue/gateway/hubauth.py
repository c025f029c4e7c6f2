"""Gateway logins with a JupyterHub API token, checked against the Hub (with a cache).

A plain ``ssh`` client cannot send an IAM access token (OpenSSH truncates passwords at 1023
characters); a JupyterHub API token is short. The Hub answers ``GET /hub/api/user`` with the
token's owner; the owner's name is the identity, the same name the JWT's
``preferred_username`` gives, so both kinds of login reach the same clusters.

Answers are cached by a hash of the token (never the token) for ``ttl`` seconds, so a tunnel
reconnecting often does not hammer the Hub; a revoked token stays usable for at most ``ttl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import urllib.error
import urllib.request

from .auth import AuthenticationFailed

#: JupyterHub API tokens: 32 hex (old) or prefixed url-safe tokens (4.x+); never a JWT.
_HUB_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


class HubTokenAuthenticator:
    """Accepts JupyterHub API tokens of *users* (not services), checked against ``hub_api_url``."""

    def __init__(
        self,
        hub_api_url: str,
        *,
        ttl: float = 60.0,
        timeout: float = 10.0,
        max_entries: int = 10_000,
    ) -> None:
        self.url = hub_api_url.rstrip("/") + "/user"
        self.ttl = ttl
        self.timeout = timeout
        self.max_entries = max_entries
        self._cache: dict[str, tuple[str, float]] = {}

    def _whoami(self, secret: str) -> str:
        request = urllib.request.Request(
            self.url, headers={"Authorization": f"token {secret}", "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                model = json.load(response)
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
        if model.get("kind", "user") != "user" or not isinstance(model.get("name"), str):
            raise AuthenticationFailed("the token does not belong to a Hub user")
        return model["name"]

    async def authenticate(self, username: str, secret: str) -> str:
        if not _HUB_TOKEN_RE.match(secret):
            raise AuthenticationFailed("not a JupyterHub API token")
        key = hashlib.sha256(secret.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached and cached[1] > now:
            return cached[0]
        identity = await asyncio.to_thread(self._whoami, secret)
        if len(self._cache) >= self.max_entries:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        self._cache[key] = (identity, now + self.ttl)
        return identity
