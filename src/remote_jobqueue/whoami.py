"""`remote-jobqueue whoami`: who your token says you are, and who the gateway and the schedd
take you for.

When a cluster will not start, the question is which of the three disagrees: a token for the
wrong audience, one the gateway no longer accepts, a schedd that maps you to another user. So
each answer is one line of its own that fails on its own, with its reason, and the token's
claims are shown unverified (labelled so): they are what the token *says*, and the two other
lines are what it is *worth*.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import config, tokens


@dataclass(frozen=True)
class Answer:
    """One line of the report: who asked (``what``), what they said, whether it worked."""

    what: str
    text: str
    ok: bool = True

    def __str__(self) -> str:
        return f"{self.what}: {self.text}"


def when(expires_at: float, now: float | None = None) -> str:
    """``2025-06-01T12:00:00Z (in 59 min)``, or ``(expired 3 min ago)``."""
    now = time.time() if now is None else now
    stamp = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    minutes = abs(expires_at - now) / 60
    if expires_at > now:
        return f"{stamp} (in {minutes:.0f} min)"
    return f"{stamp} (expired {minutes:.0f} min ago)"


def current_token() -> tuple[str | None, str]:
    """The token a cluster would use now, and where it comes from (as `_bearer_token` finds
    it: ``remote-jobqueue.token-file``, else WLCG discovery)."""
    token_file = config.get("token-file")
    if token_file:
        try:
            return Path(token_file).read_text().strip() or None, str(token_file)
        except OSError as err:
            return None, f"{token_file} ({err.strerror})"
    found = tokens.find_bearer_token()
    if found is None:
        return None, "WLCG discovery"
    return found.token, str(found.path) if found.path else "BEARER_TOKEN"


def token_answer(token: str | None, source: str) -> Answer:
    what = "token (claims not verified)"
    if not token:
        return Answer("token", f"none found ({source}); `remote-jobqueue login` stores one", False)
    try:
        claims = tokens.token_claims_unverified(token)
    except tokens.TokenError as err:
        return Answer(what, f"{err}, from {source}", False)
    exp = claims.get("exp")
    expiry = when(float(exp)) if isinstance(exp, int | float) else "no expiry"
    names = " ".join(
        f"{claim}={claims[claim]}"
        for claim in ("preferred_username", "sub", "iss")
        if claim in claims
    )
    ok = isinstance(exp, int | float) and exp > time.time()
    return Answer(what, f"{names}, expires {expiry}, from {source}", ok)


def gateways() -> list[tuple[str, str]]:
    """The gateways to ask, with their host keys: ``remote-jobqueue.gateway`` if set, else
    each one the site catalogue names (a laptop's `configure` sets only the catalogue)."""
    gateway, host_key = config.get("gateway"), config.get("gateway-host-key")
    if gateway and host_key:
        return [(gateway, host_key)]
    from . import sites

    found = {
        (spec.gateway, spec.gateway_host_key): None
        for spec in sites.catalogue().values()
        if spec.gateway and spec.gateway_host_key
    }
    return list(found)  # type: ignore[arg-type]


def gateway_answer(token: str | None, gateway: str, host_key: str, timeout: float = 10.0) -> Answer:
    """What the gateway's ``@whoami`` says of a login with ``token``."""
    from .gateway.tunnel import TunnelError, ask_whoami

    what = f"gateway {gateway}"
    if not token:
        return Answer(what, "not asked: no token", False)
    try:
        identity = asyncio.run(ask_whoami(gateway, host_key, token, timeout=timeout))
    except (TunnelError, ValueError) as err:
        return Answer(what, str(err), False)
    return Answer(what, _identity(identity))


def _identity(identity: dict[str, Any]) -> str:
    expires = identity.get("expires_at")
    until = f", login until {when(float(expires))}" if isinstance(expires, int | float) else ""
    return (
        f"{identity.get('name')} (sub={identity.get('subject')} iss={identity.get('issuer')})"
        f"{until}"
    )


def schedds() -> list[tuple[str | None, str | None]]:
    """The (collector, schedd name) pairs of the catalogue's sites, each once; the pool's
    default schedd when the catalogue names none."""
    from . import sites

    found = {
        (spec.collector, spec.schedd): None
        for spec in sites.catalogue().values()
        if not spec.is_local and (spec.collector or spec.schedd)
    }
    return list(found) or [(None, None)]


def schedd_answer(collector: str | None = None, name: str | None = None) -> Answer:
    """Whom the schedd maps us to (``MyRemoteUserName`` of a WRITE ping), when CONDOR_CONFIG
    names a pool (as `configure` arranges)."""
    if not os.environ.get("CONDOR_CONFIG"):
        return Answer("schedd", "not asked: CONDOR_CONFIG is not set", False)
    try:
        import htcondor2

        from . import schedd

        location = schedd.locate_ad(collector, name)
        what = f"schedd {location.get('Name', name or '(any)')}"
        who = str(htcondor2.ping(location, "WRITE").get("MyRemoteUserName", ""))
    except Exception as err:
        return Answer(f"schedd {name}" if name else "schedd", f"cannot ask: {err}", False)
    if not who or who.startswith("unauthenticated"):
        return Answer(what, f"does not know you ({who or 'no name'}): check your token", False)
    return Answer(what, who)


def report(timeout: float = 10.0) -> Iterator[Answer]:
    """The token, then each gateway, then each schedd: one answer each, as they come."""
    token, source = current_token()
    yield token_answer(token, source)
    found = gateways()
    if not found:
        yield Answer(
            "gateway", "not asked: no site and no remote-jobqueue.gateway names one", False
        )
    for gateway, host_key in found:
        yield gateway_answer(token, gateway, host_key, timeout)
    for collector, name in schedds():
        yield schedd_answer(collector, name)
