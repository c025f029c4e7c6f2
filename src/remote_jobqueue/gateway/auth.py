"""Who a gateway login is: the bearer token (the SSH password) names the identity owning clusters.

Each kind of token has its own authenticator (OIDC access tokens here, JupyterHub API tokens in
:mod:`.hubauth`), combined by :class:`ChainAuthenticator`. Refusal reasons are sent back to the
client and logged, so they never contain the secret.

Clusters belong to an :class:`Identity`: the issuer and the subject, the only pair OIDC
promises to be unique and stable. ``preferred_username`` is neither (and WLCG tokens often omit
it), so it is only the name people read in logs and may type as the SSH user name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..tokens import IssuerUnavailable, TokenError, TokenValidator


class AuthenticationFailed(Exception):
    """A secret was refused; ``reason`` is sent to the client and logged, so never a secret.

    ``temporary`` marks failures where the same secret may succeed later (issuer unreachable),
    so clients know whether retrying without a new token makes sense.
    """

    def __init__(self, reason: str, *, temporary: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


@dataclass(frozen=True)
class Identity:
    """Who owns clusters: ``(issuer, subject)`` is the key; ``name`` is for people.

    ``expires_at`` (Unix time) is when this login stops being good: the token's ``exp``, or
    for secrets the gateway cannot see the end of (Hub tokens) the next time it must ask again.
    """

    issuer: str
    subject: str
    name: str
    expires_at: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.issuer, self.subject)

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def __str__(self) -> str:
        return self.name


@runtime_checkable
class Authenticator(Protocol):
    """Turns (SSH user name, password = bearer token) into the identity that owns clusters."""

    async def authenticate(self, username: str, secret: str) -> Identity:
        """Return the user's identity, or raise :class:`AuthenticationFailed`."""
        ...


class JWTAuthenticator:
    """Accepts OIDC access tokens of one issuer and audience (see :class:`TokenValidator`).

    The identity is the token's ``iss`` and ``sub``; its name is ``identity_claim``
    (``preferred_username``, what JupyterHub's GenericOAuthenticator names users by) or
    ``fallback_claim`` (``sub``). The SSH user name is checked by the server, not here, so that
    every authenticator gets the same rule.
    """

    def __init__(
        self,
        validator: TokenValidator,
        identity_claim: str = "preferred_username",
        fallback_claim: str | None = "sub",
    ) -> None:
        self.validator = validator
        self.identity_claim = identity_claim
        self.fallback_claim = fallback_claim

    async def authenticate(self, username: str, secret: str) -> Identity:
        try:
            claims = await self.validator.avalidate(secret)
        except IssuerUnavailable as err:
            raise AuthenticationFailed(
                f"cannot check the token now: {err}", temporary=True
            ) from err
        except TokenError as err:
            raise AuthenticationFailed(str(err)) from err
        for claim in (self.identity_claim, self.fallback_claim):
            name = claims.get(claim) if claim else None
            if isinstance(name, str) and name:
                return Identity(claims["iss"], claims["sub"], name, float(claims["exp"]))
        raise AuthenticationFailed(f"token has no {self.identity_claim!r} claim")


class ChainAuthenticator:
    """Tries authenticators in order; the first that accepts wins.

    The seam for a second kind of secret (JupyterHub API tokens checked against the Hub): each
    authenticator refuses what it does not understand, and the combined reasons say why none
    accepted. Temporary only if some authenticator's failure was temporary.
    """

    def __init__(self, *authenticators: Authenticator) -> None:
        if not authenticators:
            raise ValueError("ChainAuthenticator needs at least one authenticator")
        self.authenticators = authenticators

    async def authenticate(self, username: str, secret: str) -> Identity:
        failures: list[AuthenticationFailed] = []
        for authenticator in self.authenticators:
            try:
                return await authenticator.authenticate(username, secret)
            except AuthenticationFailed as err:
                failures.append(err)
        raise AuthenticationFailed(
            "; ".join(f.reason for f in failures), temporary=any(f.temporary for f in failures)
        )
