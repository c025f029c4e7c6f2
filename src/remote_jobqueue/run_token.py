"""A detached run's own refresh token: how `remote-jobqueue run` outlives the user's token.

A run goes on when the laptop closes, and so past the lifetime of the access token it started
with (an hour at the facility), with no client attached to hand the bundle a renewed one. At
start, the client exchanges its token (RFC 8693, at the token's own issuer) for a refresh
token of the same user, scope and audience. That token is spooled to the bundle 0600, like the
access token, never in the job ad or an argument; the bundle's `TokenRenewer` refreshes the
access token before it runs out (the gateway checks each new one) and revokes the refresh
token when the cluster ends, so nothing that outlives the run is left behind.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Any

from . import tokens
from .login import DEFAULT_CLIENT_ID


class RunWithoutRenewal(UserWarning):
    """The run starts, but ends when its access token expires (nobody can renew it)."""


def exchange_for_run(
    access_token: str, client_id: str = DEFAULT_CLIENT_ID, *, timeout: float = 10.0
) -> tuple[dict[str, Any], str]:
    """``({"issuer", "client_id"}, refresh_token)``: what the bundle needs to renew tokens of
    ``access_token``'s user, scope and audience for as long as the run lasts.

    Raises `tokens.TokenError` (`IssuerUnavailable`, `TokenRequestError`) when the issuer
    cannot or will not; the caller then warns and runs without renewal.
    """
    claims = tokens.token_claims_unverified(access_token)
    issuer = claims.get("iss")
    if not issuer:
        raise tokens.InvalidToken("the token names no issuer to renew it at")
    scope = claims.get("scope", "").split()
    if "offline_access" not in scope:
        scope.append("offline_access")
    doc = tokens.fetch_discovery(issuer, timeout=timeout)
    response = tokens.exchange_token(
        doc["token_endpoint"],
        access_token,
        scope=" ".join(scope),
        audience=claims.get("aud"),
        client_id=client_id,
        timeout=timeout,
    )
    refresh = response.get("refresh_token")
    if not refresh:
        raise tokens.TokenRequestError(
            "no_refresh_token", f"{issuer} exchanged the token but gave no refresh token"
        )
    return {"issuer": issuer, "client_id": client_id}, refresh


def prepare(access_token: str, **kwargs: Any) -> tuple[dict[str, Any] | None, str | None]:
    """`exchange_for_run`, or ``(None, None)`` and a `RunWithoutRenewal` warning: a run that
    cannot renew still starts (an attached client can keep it going)."""
    try:
        return exchange_for_run(access_token, **kwargs)
    except tokens.TokenError as err:
        warn_without_renewal(access_token, err)
        return None, None


def warn_without_renewal(access_token: str, why: object) -> None:
    import time

    exp = tokens.token_claims_unverified(access_token).get("exp")
    until = f" at {time.strftime('%H:%M', time.localtime(exp))}" if exp else ""
    warnings.warn(
        f"the run cannot renew its bearer token ({why}): it ends when the token expires{until} "
        "unless a client stays attached (`remote-jobqueue clusters logs ID --follow`)",
        RunWithoutRenewal,
        stacklevel=4,
    )


def revoke(renewal: dict[str, Any], refresh_token: str, *, timeout: float = 10.0) -> bool:
    """Revoke the run's refresh token at its issuer; False if that could not be done."""
    with contextlib.suppress(tokens.TokenError, KeyError):
        doc = tokens.fetch_discovery(renewal["issuer"], timeout=timeout)
        endpoint = doc.get("revocation_endpoint")
        if endpoint:
            tokens.revoke_token(
                endpoint, refresh_token, client_id=renewal["client_id"], timeout=timeout
            )
            return True
    return False


class Exchange:
    """`prepare` for a caller that may give up (Ctrl-C while the cluster starts): what the
    exchange got is revoked, by whichever side learns last that nobody will use it."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token
        self._lock = threading.Lock()
        self._abandoned = False
        self._got: tuple[dict[str, Any] | None, str | None] = (None, None)

    def run(self) -> tuple[dict[str, Any] | None, str | None]:
        """The exchange (blocking; run it in a thread)."""
        got = prepare(self.access_token)
        with self._lock:
            if not self._abandoned:
                self._got = got
                return got
        _revoke_in_background(got)
        return None, None

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            got, self._got = self._got, (None, None)
        _revoke_in_background(got)


def _revoke_in_background(got: tuple[dict[str, Any] | None, str | None]) -> None:
    """Not a daemon thread: the process waits for it at exit (at most the timeout)."""
    renewal, refresh = got
    if renewal and refresh:
        threading.Thread(target=revoke, args=(renewal, refresh), name="revoke-run-token").start()
