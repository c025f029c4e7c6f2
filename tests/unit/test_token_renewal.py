"""The bundle takes a renewed bearer token from its client only once the gateway has.

Specification: the bundle's scheduler port is open to the site network, so a token arriving
with a heartbeat is not trusted on its claims: the bundle hands it to the gateway, which checks
it as at login (signature, issuer, audience, expiry) and that it names the identity the
bundle's login has; only then does it replace the bundle's file (atomically, 0600). A refused
token leaves the file as it was, and the client is told, so it offers the token again later.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio

from remote_jobqueue.bundle.agent import SiteAgent
from remote_jobqueue.gateway import (
    JWTAuthenticator,
    ReverseForwarder,
    load_or_create_host_key,
    public_key_text,
    serve,
)
from remote_jobqueue.spec import BundleSpec, WorkerSpec
from remote_jobqueue.tokens import TokenValidator

from .jwt_issuer import AUD, Issuer

pytestmark = pytest.mark.timeout(30)


@pytest_asyncio.fixture(loop_scope="function")
async def agent(tmp_path: Path, issuer: Issuer) -> AsyncIterator[SiteAgent]:
    """A site agent whose forwarder is logged in to a real gateway with a token of alice."""
    validator = TokenValidator(issuer.url, AUD, leeway=0)
    gateway, _ = await serve("127.0.0.1", 0, tmp_path / "key", JWTAuthenticator(validator))
    token_file = tmp_path / "bearer-token"
    token_file.write_text(issuer.token(exp=int(time.time()) + 60))
    token_file.chmod(0o600)

    forwarder = ReverseForwarder(
        f"127.0.0.1:{gateway.port}",
        public_key_text(load_or_create_host_key(tmp_path / "key")),
        lambda: token_file.read_text(),
        "rjq-x",
        {8786: ("127.0.0.1", 9)},
        "the-cluster-secret-0123456789",
    )
    scheduler = SimpleNamespace(handlers={}, workers={}, address="tls://s:1")
    spec = BundleSpec("rjq-x", "T2_A", WorkerSpec())
    agent = SiteAgent(scheduler, None, spec, token_file=token_file)  # type: ignore[arg-type]
    agent.verify_token = forwarder.renew
    async with gateway, forwarder:
        yield agent


async def test_a_fresh_token_of_the_same_user_replaces_ours(agent, issuer):
    renewed = issuer.token(exp=int(time.time()) + 3600)
    assert await agent.renew_token(renewed)
    assert agent.token_file.read_text() == renewed
    assert agent.token_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.security
@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "9e2d-mallory-sub", "preferred_username": "mallory"},
        {"sub": "9e2d-mallory-sub"},  # calls itself alice
        {"iss": "https://elsewhere.example"},
        {"exp": int(time.time()) - 60, "iat": int(time.time()) - 700},
    ],
    ids=["another-user", "a-namesake", "another-issuer", "expired"],
)
async def test_any_other_token_is_refused_and_ours_kept(agent, issuer, claims):
    before = agent.token_file.read_text()
    assert not await agent.renew_token(issuer.token(**{"exp": int(time.time()) + 3600, **claims}))
    assert agent.token_file.read_text() == before


@pytest.mark.security
async def test_a_forged_token_with_the_right_claims_is_refused(agent, issuer):
    """The old check compared claims only: a self-signed token of alice passed it."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    before = agent.token_file.read_text()
    assert not await agent.renew_token(issuer.token(key=forger, exp=int(time.time()) + 3600))
    assert agent.token_file.read_text() == before


async def test_the_heartbeat_carries_the_renewal_and_says_whether_it_was_taken(agent, issuer):
    renewed = issuer.token(exp=int(time.time()) + 3600)
    answer = await agent.handle_heartbeat(token=renewed)
    assert answer["lease"] == agent.lease and answer["token"] == "taken"
    assert agent.token_file.read_text() == renewed
    forged = issuer.token(sub="9e2d-mallory-sub", exp=int(time.time()) + 7200)
    assert (await agent.handle_heartbeat(token=forged))["token"] == "refused"


async def test_a_slow_gateway_never_makes_a_heartbeat_late(agent, issuer):
    """The check runs beside the heartbeat: the answer comes within a second, "pending", and
    a later offer of the same token learns the outcome (no second check)."""
    import asyncio

    checks = []

    async def slow(token: str) -> float:
        checks.append(token)
        await asyncio.sleep(2)
        return time.time() + 3600

    agent.verify_token = slow
    renewed = issuer.token(exp=int(time.time()) + 3600)
    started = time.monotonic()
    assert (await agent.handle_heartbeat(token=renewed))["token"] == "pending"
    assert time.monotonic() - started < 1.5
    await asyncio.sleep(2)
    assert (await agent.handle_heartbeat(token=renewed))["token"] == "taken"
    assert len(checks) == 1


async def test_a_token_that_ends_no_later_than_ours_is_not_even_offered_to_the_gateway(
    agent, issuer
):
    checks = []

    async def count(token: str) -> float:
        checks.append(token)
        return time.time() + 30

    agent.verify_token = count
    assert not await agent.renew_token(issuer.token(exp=int(time.time()) + 30))
    assert checks == []
