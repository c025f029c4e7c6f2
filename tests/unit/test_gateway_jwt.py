"""Gateway login with OIDC access tokens: a real RSA key, discovery and JWKS served on loopback.

The identity is ``preferred_username`` (``sub`` if absent); every refusal carries a reason the
user can act on, and no log record, at any level, ever contains the token.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from remote_jobqueue.gateway import (
    AuthenticationFailed,
    ChainAuthenticator,
    Gateway,
    JWTAuthenticator,
    TunnelAuthError,
    connect_gateway,
    load_host_keys,
    load_or_create_host_key,
    public_key_text,
    serve,
)
from remote_jobqueue.tokens import TokenValidator

pytestmark = pytest.mark.timeout(20)

AUD = "https://gateway.example"


class Issuer:
    """Discovery and JWKS of one RSA key, on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body: dict[str, Any] = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer.key.public_key()))
                    body = {"keys": [{**jwk, "kid": "k1", "alg": "RS256"}]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def token(self, key: rsa.RSAPrivateKey | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": "0f3c-alice-sub",
            "preferred_username": "alice",
            "aud": AUD,
            "iat": now,
            "exp": now + 600,
            "scope": "compute.create",
            "wlcg.ver": "1.0",
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    yield issuer
    issuer.server.shutdown()
    issuer.server.server_close()


@pytest.fixture
def authenticator(issuer: Issuer) -> JWTAuthenticator:
    return JWTAuthenticator(TokenValidator(issuer.url, AUD, leeway=0))


@pytest_asyncio.fixture(loop_scope="function")
async def gateway(tmp_path: Path, authenticator: JWTAuthenticator) -> AsyncIterator[Gateway]:
    gateway, _ = await serve("127.0.0.1", 0, tmp_path / "host_key", authenticator)
    async with gateway:
        yield gateway


async def login(gateway: Gateway, tmp_path: Path, token: str, username: str = "token") -> None:
    keys = load_host_keys(public_key_text(load_or_create_host_key(tmp_path / "host_key")))
    conn = await connect_gateway(f"127.0.0.1:{gateway.port}", keys, token, username=username)
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


async def test_good_token_identity_is_preferred_username(
    issuer: Issuer, authenticator: JWTAuthenticator
) -> None:
    assert await authenticator.authenticate("token", issuer.token()) == "alice"


async def test_identity_falls_back_to_sub(issuer: Issuer, authenticator: JWTAuthenticator) -> None:
    token = issuer.token(preferred_username=None)
    assert await authenticator.authenticate("token", token) == "0f3c-alice-sub"


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
    class HubTokens:  # stands in for JupyterHub API tokens, checked against the Hub later
        async def authenticate(self, username: str, secret: str) -> str:
            if secret == "hub-api-token-of-bob":
                return "bob"
            raise AuthenticationFailed("not a Hub token")

    chain = ChainAuthenticator(authenticator, HubTokens())
    assert await chain.authenticate("token", issuer.token()) == "alice"
    assert await chain.authenticate("token", "hub-api-token-of-bob") == "bob"
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
    assert any("alice authenticated" in r.getMessage() for r in caplog.records)
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
