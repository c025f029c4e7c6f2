"""The facility's issuer, for real: its tokens validate with `tokens.TokenValidator`, bad ones
fail with the specific exception, and every grant a facility component uses works end to end.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from remote_jobqueue import tokens
from rjq_facility import issuer
from rjq_facility.config import FacilityConfig

pytestmark = pytest.mark.integration

ANY = tokens.WLCG_ANY_AUDIENCE
SITE = "https://t2-a.rjq.test/compute"


@pytest.fixture(scope="module")
def validator(facility: FacilityConfig) -> tokens.TokenValidator:
    return tokens.TokenValidator(facility.issuer_url, ANY, leeway=0)


def _endpoint(cfg: FacilityConfig) -> str:
    return issuer.token_endpoint(cfg)


def test_discovery_jwks_and_private_state(facility: FacilityConfig) -> None:
    doc = tokens.fetch_discovery(facility.issuer_url)
    assert doc["token_endpoint"] == _endpoint(facility)
    assert tokens.TOKEN_EXCHANGE_GRANT in doc["grant_types_supported"]
    keys = requests.get(doc["jwks_uri"], timeout=5).json()["keys"]
    assert [(k["kty"], k["alg"], bool(k["kid"])) for k in keys] == [("RSA", "RS256", True)]
    state = facility.state_dir / "issuer"
    for name in ("signing-key.pem", "users.json", "clients.json"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    assert issuer.status(facility)["running"]


def test_up_is_idempotent(facility: FacilityConfig) -> None:
    before = issuer.status(facility)["pid"]
    issuer.up(facility)
    assert issuer.status(facility)["pid"] == before


def test_password_grant_token_validates(
    facility: FacilityConfig, validator: tokens.TokenValidator
) -> None:
    response = issuer.password_grant(facility, "alice")
    assert response["token_type"] == "Bearer"
    assert {"refresh_token", "id_token"} <= response.keys()
    claims = validator.validate(response["access_token"])
    assert response["expires_in"] == claims["exp"] - claims["iat"] > 0
    assert claims["preferred_username"] == "alice"
    assert claims["wlcg.ver"] == "1.0"
    assert claims["wlcg.groups"] == ["/facility", "/facility/alice"]
    assert claims["client_id"] == issuer.PUBLIC_CLIENT
    assert {"compute.create", "storage.read:/"} <= set(claims["scope"].split())
    assert claims["sub"] != "alice"  # opaque, as IAM's: use preferred_username for names
    assert {"iat", "nbf", "exp", "jti"} <= claims.keys()


def test_wrong_password_is_refused(facility: FacilityConfig) -> None:
    form = {"grant_type": "password", "username": "alice", "password": "guess"}
    with pytest.raises(tokens.TokenRequestError) as info:
        tokens.token_request(_endpoint(facility), form, client_id=issuer.PUBLIC_CLIENT)
    assert info.value.error == "invalid_grant"


def test_expired_token(facility: FacilityConfig, validator: tokens.TokenValidator) -> None:
    token = issuer.password_grant(facility, "bob", expires_in=1)["access_token"]
    exp = tokens.token_claims_unverified(token)["exp"]
    time.sleep(max(0.0, exp - time.time()) + 0.5)
    with pytest.raises(tokens.ExpiredToken):
        validator.validate(token)


def test_wrongly_signed_token_with_the_real_kid(
    facility: FacilityConfig, validator: tokens.TokenValidator
) -> None:
    real = issuer.password_grant(facility, "alice")["access_token"]
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        tokens.token_claims_unverified(real),
        forger,
        algorithm="RS256",
        headers={"kid": jwt.get_unverified_header(real)["kid"]},
    )
    with pytest.raises(tokens.BadSignature):
        validator.validate(forged)


def test_wrong_audience(facility: FacilityConfig, validator: tokens.TokenValidator) -> None:
    token = issuer.password_grant(facility, "alice", audience=SITE)["access_token"]
    with pytest.raises(tokens.WrongAudience):
        validator.validate(token)
    site = tokens.TokenValidator(facility.issuer_url, SITE)
    assert site.validate(token)["aud"] == SITE


def test_refresh_rotates(facility: FacilityConfig, validator: tokens.TokenValidator) -> None:
    first = issuer.password_grant(facility, "alice")
    second = tokens.refresh_access_token(
        _endpoint(facility), first["refresh_token"], client_id=issuer.PUBLIC_CLIENT
    )
    new = validator.validate(second["access_token"])
    old = validator.validate(first["access_token"])
    assert new["jti"] != old["jti"] and new["sub"] == old["sub"]
    assert second["refresh_token"] != first["refresh_token"]
    with pytest.raises(tokens.TokenRequestError) as info:  # the old one was revoked
        tokens.refresh_access_token(
            _endpoint(facility), first["refresh_token"], client_id=issuer.PUBLIC_CLIENT
        )
    assert info.value.error == "invalid_grant"

    narrow = tokens.refresh_access_token(
        _endpoint(facility),
        second["refresh_token"],
        client_id=issuer.PUBLIC_CLIENT,
        scope="compute.read storage.read:/store/user/alice",
    )
    assert validator.validate(narrow["access_token"])["scope"] == (
        "compute.read storage.read:/store/user/alice"
    )
    with pytest.raises(tokens.TokenRequestError) as info:  # narrowing once never widens
        tokens.refresh_access_token(
            _endpoint(facility),
            narrow["refresh_token"],
            client_id=issuer.PUBLIC_CLIENT,
            scope="storage.modify:/",
        )
    assert info.value.error == "invalid_scope"


def test_refresh_token_is_bound_to_its_client(facility: FacilityConfig) -> None:
    first = issuer.password_grant(facility, "alice")
    with pytest.raises(tokens.TokenRequestError) as info:
        tokens.refresh_access_token(
            _endpoint(facility),
            first["refresh_token"],
            client_id=issuer.HUB_CLIENT,
            client_secret=issuer.client_secret(facility),
        )
    assert info.value.error == "invalid_grant"


def test_token_exchange(facility: FacilityConfig) -> None:
    subject = issuer.password_grant(facility, "alice")["access_token"]
    exchanged = tokens.exchange_token(
        _endpoint(facility),
        subject,
        client_id=issuer.HUB_CLIENT,
        client_secret=issuer.client_secret(facility),
        scope="compute.read compute.create",
        audience=SITE,
    )
    assert exchanged["issued_token_type"] == tokens.ACCESS_TOKEN_TYPE
    assert "refresh_token" not in exchanged and "id_token" not in exchanged
    claims = tokens.TokenValidator(facility.issuer_url, SITE).validate(exchanged["access_token"])
    assert claims["scope"] == "compute.read compute.create"
    assert claims["preferred_username"] == "alice"
    assert claims["act"] == {"sub": issuer.HUB_CLIENT}

    with pytest.raises(tokens.TokenRequestError) as info:  # no widening through exchange
        tokens.exchange_token(
            _endpoint(facility),
            exchanged["access_token"],
            client_id=issuer.PUBLIC_CLIENT,
            scope="storage.modify:/",
        )
    assert info.value.error == "invalid_scope"


def test_token_exchange_refuses_id_tokens_and_forgeries(facility: FacilityConfig) -> None:
    response = issuer.password_grant(facility, "alice")
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        tokens.token_claims_unverified(response["access_token"]),
        forger,
        algorithm="RS256",
        headers=jwt.get_unverified_header(response["access_token"]),
    )
    for bad in (response["id_token"], forged):
        with pytest.raises(tokens.TokenRequestError) as info:
            tokens.exchange_token(_endpoint(facility), bad, client_id=issuer.PUBLIC_CLIENT)
        assert info.value.error == "invalid_request"


def test_confidential_client_must_authenticate(facility: FacilityConfig) -> None:
    subject = issuer.password_grant(facility, "alice")["access_token"]
    with pytest.raises(tokens.TokenRequestError) as no_secret:
        tokens.exchange_token(_endpoint(facility), subject, client_id=issuer.HUB_CLIENT)
    form = {"grant_type": "password", "username": "alice", "password": "x"}
    with pytest.raises(tokens.TokenRequestError) as bad_secret:
        tokens.token_request(
            _endpoint(facility), form, client_id=issuer.HUB_CLIENT, client_secret="wrong"
        )
    for info in (no_secret, bad_secret):
        assert (info.value.error, info.value.status) == ("invalid_client", 401)


def test_userinfo(facility: FacilityConfig) -> None:
    url = tokens.fetch_discovery(facility.issuer_url)["userinfo_endpoint"]
    token = issuer.password_grant(facility, "bob")["access_token"]
    info = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    assert info["preferred_username"] == "bob"
    assert info["wlcg.groups"] == ["/facility", "/facility/bob"]
    assert info["sub"] == tokens.token_claims_unverified(token)["sub"]
    refused = requests.get(url, headers={"Authorization": "Bearer nonsense"}, timeout=5)
    assert refused.status_code == 401


# Authorization-code flow ----------------------------------------------------------------------


class _Callback:
    """A loopback redirect target that records what the issuer sends back."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.urlsplit(self.path).query
                callback.queries.append(dict(urllib.parse.parse_qsl(query)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/oauth_callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def callback() -> Iterator[_Callback]:
    cb = _Callback()
    yield cb
    cb.server.shutdown()
    cb.server.server_close()


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.action, self.method = a.get("action"), (a.get("method") or "get").lower()
        elif tag == "input" and a.get("name"):
            self.fields[a["name"] or ""] = a.get("value") or ""


def _log_in(session: requests.Session, page: requests.Response, user: str, password: str) -> Any:
    form = _Form()
    form.feed(page.text)
    assert form.method == "post"
    target = urllib.parse.urljoin(page.url, form.action) if form.action else page.url
    return session.post(target, data={**form.fields, "username": user, "password": password})


def test_authorization_code_flow(facility: FacilityConfig, callback: _Callback) -> None:
    secret = issuer.client_secret(facility)
    assert secret is not None
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    doc = tokens.fetch_discovery(facility.issuer_url)
    params = {
        "response_type": "code",
        "client_id": issuer.HUB_CLIENT,
        "redirect_uri": callback.url,
        "scope": "openid profile compute.read",
        "state": "xyzzy",
        "nonce": "n-0S6",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    with requests.Session() as session:
        page = session.get(doc["authorization_endpoint"], params=params, timeout=5)
        assert page.status_code == 200 and 'type="password"' in page.text
        wrong = _log_in(session, page, "alice", "not-the-password")
        assert wrong.status_code == 401 and not callback.queries
        done = _log_in(session, page, "alice", issuer.user_password(facility, "alice"))
    assert done.status_code == 200 and done.url.startswith(callback.url)
    (query,) = callback.queries
    assert query["state"] == "xyzzy"

    def redeem(**extra: str) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": query["code"], **extra}
        return tokens.token_request(
            doc["token_endpoint"], form, client_id=issuer.HUB_CLIENT, client_secret=secret
        )

    response = redeem(redirect_uri=callback.url, code_verifier=verifier)
    access = tokens.TokenValidator(facility.issuer_url, ANY).validate(response["access_token"])
    assert access["preferred_username"] == "alice"
    assert access["scope"] == "openid profile compute.read"
    id_claims = tokens.TokenValidator(facility.issuer_url, issuer.HUB_CLIENT).validate(
        response["id_token"]
    )
    assert id_claims["nonce"] == "n-0S6"
    assert id_claims["sub"] == access["sub"]
    assert response["refresh_token"]

    with pytest.raises(tokens.TokenRequestError) as info:  # codes are single use
        redeem(redirect_uri=callback.url, code_verifier=verifier)
    assert info.value.error == "invalid_grant"


def test_authorization_code_needs_pkce_verifier(
    facility: FacilityConfig, callback: _Callback
) -> None:
    doc = tokens.fetch_discovery(facility.issuer_url)
    params = {
        "response_type": "code",
        "client_id": issuer.PUBLIC_CLIENT,
        "redirect_uri": callback.url,
        "state": "s",
        "code_challenge": "a" * 43,
        "code_challenge_method": "S256",
    }
    with requests.Session() as session:
        page = session.get(doc["authorization_endpoint"], params=params, timeout=5)
        _log_in(session, page, "bob", issuer.user_password(facility, "bob"))
    form = {
        "grant_type": "authorization_code",
        "code": callback.queries[0]["code"],
        "redirect_uri": callback.url,
        "code_verifier": "wrong",
    }
    with pytest.raises(tokens.TokenRequestError, match="PKCE"):
        tokens.token_request(doc["token_endpoint"], form, client_id=issuer.PUBLIC_CLIENT)


def test_authorize_refuses_foreign_redirects(facility: FacilityConfig) -> None:
    doc = tokens.fetch_discovery(facility.issuer_url)
    params = {
        "response_type": "code",
        "client_id": issuer.HUB_CLIENT,
        "redirect_uri": "https://evil.example/cb",
    }
    page = requests.get(
        doc["authorization_endpoint"], params=params, timeout=5, allow_redirects=False
    )
    assert page.status_code == 400
