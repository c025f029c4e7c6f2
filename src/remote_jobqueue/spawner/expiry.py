"""When is a token due for renewal: one rule, shared by the Hub's hook and the refresher.

The Hub refreshes a little *earlier* than the refresher asks (``HUB_LEAD`` seconds), so the
refresher's request always finds a fresh token instead of polling the old one until it expires.
"""

from __future__ import annotations

import time

from ..tokens import InvalidToken, token_claims_unverified

#: Seconds by which the Hub's refresh window is wider than the refresher's.
HUB_LEAD = 5.0


def lifetime_and_expiry(token: str) -> tuple[float, float]:
    """(lifetime, exp) of a JWT access token, read without verification (a scheduling hint)."""
    claims = token_claims_unverified(token)
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise InvalidToken("token has no exp claim")
    iat = claims.get("iat")
    lifetime = exp - iat if isinstance(iat, int | float) and iat < exp else 3600.0
    return float(lifetime), float(exp)


def window(lifetime: float, margin: float) -> float:
    """Seconds before ``exp`` at which a token is renewed: ``margin``, but at most half its life.

    A margin longer than the lifetime would renew tokens continuously; half the lifetime keeps
    one old and one new token valid at any time.
    """
    return max(1.0, min(margin, lifetime / 2))


def seconds_left(token: str, now: float | None = None) -> float:
    _, exp = lifetime_and_expiry(token)
    return exp - (time.time() if now is None else now)


def refresh_due(token: str, margin: float, *, lead: float = 0.0, now: float | None = None) -> bool:
    """Is ``token`` within its renewal window (widened by ``lead`` seconds)?"""
    lifetime, exp = lifetime_and_expiry(token)
    now = time.time() if now is None else now
    return exp - now <= window(lifetime, margin) + lead
