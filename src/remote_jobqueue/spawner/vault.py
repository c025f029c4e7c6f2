"""Keep refresh tokens in the Hub, out of auth_state.

The refresher reads auth_state through the Hub API with the server's token, which the user
holds too; auth_state must therefore carry nothing the user may not have. The access token
is theirs anyway; the refresh token is not (it outlives the session, and with the Hub's client
credentials it mints new tokens). `RefreshTokenVault.modify_auth_state` moves it into the
vault and leaves an opaque handle in auth_state; `RefreshAhead(vault=...)` refreshes with it.

The vault lives in the Hub's memory and, if given a path, in a file encrypted with the Hub's
``JUPYTERHUB_CRYPT_KEY`` (mode 0600), so a Hub restart does not force everyone to log in again.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path
from typing import Any

from ..tokens import TokenError, token_claims_unverified, write_private_file


class RefreshTokenVault:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._tokens: dict[str, str] | None = None if self.path else {}
        self._lock = asyncio.Lock()

    def __deepcopy__(self, memo: dict) -> RefreshTokenVault:
        # traitlets deep-copies config values: the hook and RefreshAhead must share one vault.
        return self

    def __copy__(self) -> RefreshTokenVault:
        return self

    async def _load(self) -> dict[str, str]:
        if self._tokens is None:
            self._tokens = {}
            if self.path is not None and self.path.exists():
                from jupyterhub.crypto import decrypt

                self._tokens = dict(await decrypt(self.path.read_bytes()))
        return self._tokens

    async def _save(self) -> None:
        if self.path is not None:
            from jupyterhub.crypto import encrypt

            write_private_file(self.path, await encrypt(dict(self._tokens or {})))

    async def put(self, refresh_token: str, handle: str | None = None) -> str:
        """Store a refresh token under ``handle`` (replacing what was there); return the handle."""
        async with self._lock:
            handle = handle or secrets.token_urlsafe(24)
            (await self._load())[handle] = refresh_token
            await self._save()
            return handle

    async def get(self, handle: str | None) -> str | None:
        async with self._lock:
            return (await self._load()).get(handle or "")

    async def drop(self, handle: str | None) -> None:
        async with self._lock:
            if (await self._load()).pop(handle or "", None) is not None:
                await self._save()

    async def modify_auth_state(self, authenticator: Any, auth_state: dict[str, Any]) -> dict:
        """An OAuthenticator ``modify_auth_state_hook``: refresh token out, handle in."""
        state = dict(auth_state)
        response = dict(state.get("token_response") or {})
        refresh = state.pop("refresh_token", None) or response.pop("refresh_token", None)
        response.pop("refresh_token", None)
        if response:
            state["token_response"] = response
        # One entry per subject: a new login replaces the user's older refresh token instead of
        # leaving it behind in the vault for good.
        state["refresh_handle"] = await self.put(refresh, _subject(state)) if refresh else None
        return state


def _subject(auth_state: dict[str, Any]) -> str | None:
    """``iss`` + ``sub`` of the access token (unverified: it only names a vault entry)."""
    try:
        claims = token_claims_unverified(auth_state.get("access_token") or "")
    except TokenError:
        return None
    if not claims.get("sub"):
        return None
    digest = hashlib.sha256(f"{claims.get('iss')}\0{claims['sub']}".encode()).hexdigest()
    return f"sub-{digest[:32]}"
