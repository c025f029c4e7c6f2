"""Who a gateway login is: the bearer token (the SSH password) names the identity owning clusters.

Each kind of token has its own authenticator (OIDC access tokens here, JupyterHub API tokens in
:mod:`.hubauth`), combined by :class:`ChainAuthenticator`. Refusal reasons are sent back to the
client and logged, so they never contain the secret.
"""

from __future__ import annotations

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


@runtime_checkable
class Authenticator(Protocol):
    """Turns (SSH user name, password = bearer token) into the identity that owns clusters."""

    async def authenticate(self, username: str, secret: str) -> str:
        """Return the user identity, or raise :class:`AuthenticationFailed`."""
        ...


class JWTAuthenticator:
    """Accepts OIDC access tokens of one issuer and audience (see :class:`TokenValidator`).

    The identity is ``identity_claim`` (``preferred_username``, which is what JupyterHub's
    GenericOAuthenticator names users by, so lab and bundle land in the same namespace), or
    ``fallback_claim`` (``sub``) for issuers that do not send it. The SSH user name is checked by
    the server, not here, so that every authenticator gets the same rule.
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

    async def authenticate(self, username: str, secret: str) -> str:
        try:
            claims = await self.validator.avalidate(secret)
        except IssuerUnavailable as err:
            raise AuthenticationFailed(
                f"cannot check the token now: {err}", temporary=True
            ) from err
        except TokenError as err:
            raise AuthenticationFailed(str(err)) from err
        for claim in (self.identity_claim, self.fallback_claim):
            identity = claims.get(claim) if claim else None
            if isinstance(identity, str) and identity:
                return identity
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

    async def authenticate(self, username: str, secret: str) -> str:
        failures: list[AuthenticationFailed] = []
        for authenticator in self.authenticators:
            try:
                return await authenticator.authenticate(username, secret)
            except AuthenticationFailed as err:
                failures.append(err)
        raise AuthenticationFailed(
            "; ".join(f.reason for f in failures), temporary=any(f.temporary for f in failures)
        )
