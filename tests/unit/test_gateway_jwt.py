"""Gateway login with OIDC access tokens: a real RSA key, discovery and JWKS served on loopback.

The identity is the issuer and subject, named ``preferred_username`` (``sub`` if absent); every
refusal carries a reason the user can act on, and no log record, at any level, ever contains
the token. A login lasts as long as its token, unless renewed in-band with a fresh one. A
client may ask who it is logged in as (``@whoami``), and hears the identity the gateway keeps.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from remote_jobqueue.gateway import (
    AuthenticationFailed,
    ChainAuthenticator,
    Gateway,
    Identity,
    JWTAuthenticator,
    Tunnel,
    TunnelAuthError,
    connect_gateway,
    load_host_keys,
    load_or_create_host_key,
    public_key_text,
    serve,
)
from remote_jobqueue.gateway.tunnel import ask_whoami, renew_login, whoami
from remote_jobqueue.tokens import TokenValidator

from ..waiting import async_wait_until
from .jwt_issuer import AUD, Issuer

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def authenticator(issuer: Issuer) -> JWTAuthenticator:
    return JWTAuthenticator(TokenValidator(issuer.url, AUD, leeway=0))


@pytest_asyncio.fixture(loop_scope="function")
async def gateway(tmp_path: Path, authenticator: JWTAuthenticator) -> AsyncIterator[Gateway]:
    gateway, _ = await serve("127.0.0.1", 0, tmp_path / "host_key", authenticator)
    async with gateway:
        yield gateway


async def connect(
    gateway: Gateway, tmp_path: Path, token: str, username: str = "token"
) -> asyncssh.SSHClientConnection:
    keys = load_host_keys(public_key_text(load_or_create_host_key(tmp_path / "host_key")))
    return await connect_gateway(f"127.0.0.1:{gateway.port}", keys, token, username=username)


async def login(gateway: Gateway, tmp_path: Path, token: str, username: str = "token") -> None:
    conn = await connect(gateway, tmp_path, token, username)
    conn.close()
    await conn.wait_closed()


def assert_never_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    assert caplog.records, "expected the gateway to log something"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        for secret in secrets:
            assert secret not in text, f"token leaked into a log record: {record.name}"
            assert secret.split(".")[2] not in text  # not even the signature part


# The authenticator on its own -------------------------------------------------------------------


async def test_identity_is_issuer_and_subject_named_by_preferred_username(
    issuer: Issuer, authenticator: JWTAuthenticator
) -> None:
    token = issuer.token()
    identity = await authenticator.authenticate("token", token)
    assert identity.key == (issuer.url, "0f3c-alice-sub") and identity.name == "alice"
    assert identity.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]


async def test_identity_name_falls_back_to_sub(
    issuer: Issuer, authenticator: JWTAuthenticator
) -> None:
    token = issuer.token(preferred_username=None)
    assert (await authenticator.authenticate("token", token)).name == "0f3c-alice-sub"


@pytest.mark.security
async def test_a_namesake_is_another_identity(
    issuer: Issuer, authenticator: JWTAuthenticator
) -> None:
    """``preferred_username`` is neither unique nor stable: clusters key on the subject."""
    alice = await authenticator.authenticate("token", issuer.token())
    namesake = await authenticator.authenticate("token", issuer.token(sub="9e2d-mallory-sub"))
    assert namesake.name == alice.name == "alice"
    assert namesake.key != alice.key


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 60, "iat": int(time.time()) - 700}, "expired"),
        ({"iss": "https://elsewhere.example"}, "wrong issuer"),
        ({"aud": "https://some-storage.example"}, "wrong audience"),
    ],
    ids=["expired", "foreign-issuer", "wrong-audience"],
)
async def test_bad_tokens_are_refused_with_a_reason(
    issuer: Issuer, authenticator: JWTAuthenticator, overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(AuthenticationFailed, match=reason) as err:
        await authenticator.authenticate("token", issuer.token(**overrides))
    assert not err.value.temporary


async def test_forged_token_is_refused(issuer: Issuer, authenticator: JWTAuthenticator) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthenticationFailed, match="signature"):
        await authenticator.authenticate("token", issuer.token(key=forger))


async def test_issuer_down_is_a_temporary_failure(issuer: Issuer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    authenticator = JWTAuthenticator(TokenValidator(dead, AUD, timeout=2))
    with pytest.raises(AuthenticationFailed, match=f"cannot check the token now: .*{dead}") as err:
        await authenticator.authenticate("token", issuer.token(iss=dead))
    assert err.value.temporary


async def test_chain_accepts_what_any_member_accepts(
    issuer: Issuer, authenticator: JWTAuthenticator
) -> None:
    bob = Identity(issuer.url, "bob-sub", "bob", time.time() + 60)

    class HubTokens:  # stands in for JupyterHub API tokens, checked against the Hub later
        async def authenticate(self, username: str, secret: str) -> Identity:
            if secret == "hub-api-token-of-bob":
                return bob
            raise AuthenticationFailed("not a Hub token")

    chain = ChainAuthenticator(authenticator, HubTokens())
    assert (await chain.authenticate("token", issuer.token())).name == "alice"
    assert await chain.authenticate("token", "hub-api-token-of-bob") == bob
    with pytest.raises(AuthenticationFailed, match=r"malformed token; not a Hub token"):
        await chain.authenticate("token", "garbage")


# Through the SSH server -----------------------------------------------------------------------


async def test_login_with_a_good_token_never_logs_it(
    issuer: Issuer, gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = issuer.token()
    await login(gateway, tmp_path, token)
    await login(gateway, tmp_path, token, username="alice")
    assert any("alice (0f3c-alice-sub) authenticated" in r.getMessage() for r in caplog.records)
    assert_never_logged(caplog, token)


async def test_refusals_reach_the_client_and_never_log_the_token(
    issuer: Issuer, gateway: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expired = issuer.token(exp=int(time.time()) - 60, iat=int(time.time()) - 700)
    foreign = issuer.token(iss="https://elsewhere.example")
    wrong_aud = issuer.token(aud="https://some-storage.example")
    for token, reason in [
        (expired, "token expired"),
        (foreign, "wrong issuer"),
        (wrong_aud, "wrong audience"),
    ]:
        with pytest.raises(TunnelAuthError, match=reason) as err:
            await login(gateway, tmp_path, token)
        assert not err.value.temporary
    # someone pastes the token as the user name: refused, and the name is not logged either
    with pytest.raises(TunnelAuthError, match="not the token's identity"):
        await login(gateway, tmp_path, issuer.token(), username=issuer.token(sub="x"))
    assert sum("failed" in r.getMessage() for r in caplog.records) >= 4
    assert_never_logged(caplog, expired, foreign, wrong_aud, issuer.token(sub="x"))


# A login lasts as long as its token -----------------------------------------------------------


@pytest.mark.security
async def test_a_connection_is_closed_when_its_token_expires(
    issuer: Issuer, gateway: Gateway, tmp_path: Path
) -> None:
    now = int(time.time())
    conn = await connect(gateway, tmp_path, issuer.token(exp=now + 2))
    await asyncio.wait_for(conn.wait_closed(), 10)
    assert conn.is_closed()


@pytest.mark.security
async def test_a_fresh_token_of_the_same_identity_extends_the_login(
    issuer: Issuer, gateway: Gateway, tmp_path: Path
) -> None:
    now = int(time.time())
    conn = await connect(gateway, tmp_path, issuer.token(exp=now + 2))
    until = await renew_login(conn, issuer.token(exp=now + 600))
    assert until == now + 600
    await asyncio.sleep(3)
    assert not conn.is_closed()
    conn.close()


@pytest.mark.security
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"sub": "9e2d-mallory-sub", "preferred_username": "mallory"}, "mallory's, not alice's"),
        ({"sub": "9e2d-mallory-sub"}, "the token is alice's, not alice's"),  # a namesake
        ({"exp": int(time.time()) - 60, "iat": int(time.time()) - 700}, "token expired"),
        ({"aud": "https://some-storage.example"}, "wrong audience"),
    ],
    ids=["another-user", "namesake", "expired", "wrong-audience"],
)
async def test_a_renewal_with_any_other_token_is_refused_and_the_login_still_ends(
    issuer: Issuer, gateway: Gateway, tmp_path: Path, overrides: dict[str, Any], reason: str
) -> None:
    conn = await connect(gateway, tmp_path, issuer.token(exp=int(time.time()) + 3))
    with pytest.raises(TunnelAuthError, match=reason):
        await renew_login(conn, issuer.token(**{"exp": int(time.time()) + 600, **overrides}))
    await asyncio.wait_for(conn.wait_closed(), 10)


@pytest.mark.security
async def test_a_tunnel_renews_its_login_before_the_gateway_would_end_it(
    issuer: Issuer, gateway: Gateway, tmp_path: Path
) -> None:
    """The link reads its token source again ahead of the end: a refreshed token is used."""
    tokens = [issuer.token(exp=int(time.time()) + 3)]
    key = public_key_text(load_or_create_host_key(tmp_path / "host_key"))
    tunnel = Tunnel(f"127.0.0.1:{gateway.port}", key, lambda: tokens[-1], "rjq-abc")
    await tunnel.start()
    try:
        tokens.append(issuer.token(exp=int(time.time()) + 600))
        await asyncio.sleep(4)
        assert tunnel.connect_count == 1 and not tunnel.connection.is_closed()
        assert tunnel.login_expires is not None and tunnel.login_expires > time.time() + 500
    finally:
        await tunnel.close()


# Who am I? ------------------------------------------------------------------------------------


async def test_whoami_answers_the_identity_of_the_connection(
    issuer: Issuer, gateway: Gateway, tmp_path: Path
) -> None:
    exp = int(time.time()) + 600
    conn = await connect(gateway, tmp_path, issuer.token(exp=exp))
    try:
        assert await whoami(conn) == {
            "issuer": issuer.url,
            "subject": "0f3c-alice-sub",
            "name": "alice",
            "expires_at": exp,
        }
    finally:
        conn.close()


async def test_whoami_follows_a_renewal(issuer: Issuer, gateway: Gateway, tmp_path: Path) -> None:
    now = int(time.time())
    conn = await connect(gateway, tmp_path, issuer.token(exp=now + 60))
    try:
        await renew_login(conn, issuer.token(exp=now + 600))
        assert (await whoami(conn))["expires_at"] == now + 600
    finally:
        conn.close()


async def test_ask_whoami_logs_in_asks_and_leaves(
    issuer: Issuer, gateway: Gateway, tmp_path: Path
) -> None:
    key = public_key_text(load_or_create_host_key(tmp_path / "host_key"))
    identity = await ask_whoami(f"127.0.0.1:{gateway.port}", key, issuer.token())
    assert identity["name"] == "alice"
    await async_wait_until(lambda: not gateway.sessions, 5, "the connection to be gone")


async def test_ask_whoami_with_a_refused_token_says_why(
    issuer: Issuer, gateway: Gateway, tmp_path: Path
) -> None:
    key = public_key_text(load_or_create_host_key(tmp_path / "host_key"))
    with pytest.raises(TunnelAuthError, match="wrong audience"):
        await ask_whoami(f"127.0.0.1:{gateway.port}", key, issuer.token(aud="https://else"))
