"""Token discovery, storage and validation, against an in-process key served on loopback."""

from __future__ import annotations

import base64
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from remote_jobqueue import tokens

AUD = "https://site.example/compute"
UID = 4242


# A tiny issuer: discovery + JWKS (+ a token endpoint that always refuses) ----------------------


class FakeIssuer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.rotated: dict[str, rsa.RSAPrivateKey] = {}  # published besides ``key``
        self.jwks_requests = 0
        self.last_auth: str | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"})
                elif self.path == "/jwks":
                    issuer.jwks_requests += 1
                    keys = {issuer.kid: issuer.key, **issuer.rotated}
                    self._json(200, {"keys": [_jwk(kid, key) for kid, key in keys.items()]})
                else:
                    self._json(404, {})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                issuer.last_auth = self.headers.get("Authorization")
                self._json(400, {"error": "invalid_grant", "error_description": "nope"})

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def token(
        self, key: rsa.RSAPrivateKey | None = None, kid: str | None = None, **overrides: Any
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": "a01cd6a6-alice",
            "aud": AUD,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "scope": "compute.read",
            "wlcg.ver": "1.0",
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        headers = {"kid": kid or self.kid}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers=headers)


def _jwk(kid: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256"}


@pytest.fixture(scope="module")
def fake_issuer() -> Iterator[FakeIssuer]:
    issuer = FakeIssuer()
    yield issuer
    issuer.server.shutdown()
    issuer.server.server_close()


@pytest.fixture
def validator(fake_issuer: FakeIssuer) -> tokens.TokenValidator:
    return tokens.TokenValidator(fake_issuer.url, [AUD, "https://other"], leeway=0)


# Discovery ------------------------------------------------------------------------------------


def _sources(tmp: Path) -> dict[str, str]:
    """Every discovery source, each holding a different token; returns the environment."""
    (tmp / "run").mkdir()
    (tmp / "tmp").mkdir()
    (tmp / "file").write_text("from-file\n")
    (tmp / "run" / f"bt_u{UID}").write_text("from-xdg\n")
    (tmp / "tmp" / f"bt_u{UID}").write_text("from-tmp\n")
    return {
        "BEARER_TOKEN": "from-env",
        "BEARER_TOKEN_FILE": str(tmp / "file"),
        "XDG_RUNTIME_DIR": str(tmp / "run"),
    }


def test_discovery_order(tmp_path: Path) -> None:
    env = _sources(tmp_path)

    def found() -> str | None:
        return tokens.discover_bearer_token(env, uid=UID, tmp_dir=tmp_path / "tmp")

    assert found() == "from-env"
    del env["BEARER_TOKEN"]
    assert found() == "from-file"
    del env["BEARER_TOKEN_FILE"]
    assert found() == "from-xdg"
    del env["XDG_RUNTIME_DIR"]
    assert found() == "from-tmp"
    (tmp_path / "tmp" / f"bt_u{UID}").unlink()
    assert found() is None


def test_discovery_falls_through_empty_and_missing(tmp_path: Path) -> None:
    env = _sources(tmp_path)
    env["BEARER_TOKEN"] = "  \n"
    env["BEARER_TOKEN_FILE"] = str(tmp_path / "missing")
    (tmp_path / "run" / f"bt_u{UID}").write_text("\n")
    assert tokens.discover_bearer_token(env, uid=UID, tmp_dir=tmp_path / "tmp") == "from-tmp"


def test_discovery_uses_effective_uid_by_default(tmp_path: Path) -> None:
    (tmp_path / f"bt_u{os.geteuid()}").write_text("mine")
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert tokens.discover_bearer_token(env, tmp_dir=tmp_path / "nowhere") == "mine"


_token_text = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N", "P", "S"]), min_size=1
)
_space = st.text(alphabet=" \t\r\n", max_size=5)


@given(token=_token_text, before=_space, after=_space)
def test_discovery_strips_whitespace(token: str, before: str, after: str) -> None:
    padded = before + token + after
    assert tokens.discover_bearer_token({"BEARER_TOKEN": padded}, uid=UID) == token
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tok"
        path.write_text(padded)
        env = {"BEARER_TOKEN_FILE": str(path)}
        assert tokens.discover_bearer_token(env, uid=UID, tmp_dir=tmp) == token


# Discovery trusts only files that no one else could have put there ----------------------------


def _discover(env: dict[str, str], tmp: Path, uid: int = UID) -> str | None:
    return tokens.discover_bearer_token(env, uid=uid, tmp_dir=tmp / "tmp")


def _someone_elses(path: Path, text: str) -> int:
    """Write ``path`` owned by a uid that is neither UID nor root; returns that uid."""
    path.write_text(text)
    if os.geteuid() == 0:
        os.chown(path, 1002, 1002)
    return path.stat().st_uid


@pytest.mark.security
def test_a_token_file_of_another_user_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = _sources(tmp_path)
    del env["BEARER_TOKEN"]
    owner = _someone_elses(tmp_path / "file", "planted")
    with pytest.warns(tokens.TokenFileIgnored) as warned:
        assert _discover(env, tmp_path) == "from-xdg"  # the next candidate
    why = f"ignoring token file {tmp_path / 'file'}: owned by uid {owner}, not {UID} (or root)"
    assert [str(w.message) for w in warned] == [why]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [why]


def test_for_root_only_a_root_owned_token_file_counts(tmp_path: Path) -> None:
    path = tmp_path / "tok"
    owner = _someone_elses(path, "planted")
    with pytest.warns(tokens.TokenFileIgnored, match=f"owned by uid {owner}, not 0$"):
        assert _discover({"BEARER_TOKEN_FILE": str(path)}, tmp_path, uid=0) is None


@pytest.mark.security
@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602], ids=oct)
def test_a_token_file_writable_by_group_or_others_is_ignored(tmp_path: Path, mode: int) -> None:
    env = _sources(tmp_path)
    del env["BEARER_TOKEN"], env["BEARER_TOKEN_FILE"]
    xdg = tmp_path / "run" / f"bt_u{UID}"
    xdg.chmod(mode)
    why = f"ignoring token file {xdg}: writable by group or others (mode {mode:#o})"
    with pytest.warns(tokens.TokenFileIgnored) as warned:
        assert _discover(env, tmp_path) == "from-tmp"
    assert [str(w.message) for w in warned] == [why]


def test_a_private_or_merely_readable_token_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "tok"
    for mode in (0o600, 0o400, 0o644):
        path.write_text("good")
        path.chmod(mode)
        assert _discover({"BEARER_TOKEN_FILE": str(path)}, tmp_path) == "good"


def test_bearer_token_in_the_environment_is_not_checked(tmp_path: Path) -> None:
    env = _sources(tmp_path)
    (tmp_path / "file").chmod(0o666)
    assert _discover(env, tmp_path) == "from-env"


@pytest.mark.security
def test_a_link_at_a_well_known_path_is_ignored_but_bearer_token_file_may_be_one(
    tmp_path: Path,
) -> None:
    env = _sources(tmp_path)
    del env["BEARER_TOKEN"], env["BEARER_TOKEN_FILE"]
    xdg = tmp_path / "run" / f"bt_u{UID}"
    xdg.unlink()
    xdg.symlink_to(tmp_path / "file")  # a file of ours, which a planted link would leak
    with pytest.warns(tokens.TokenFileIgnored, match=f"{xdg}: a symbolic link$"):
        assert _discover(env, tmp_path) == "from-tmp"
    env = {"BEARER_TOKEN_FILE": str(xdg)}  # chosen by the user: e.g. a mounted secret
    assert _discover(env, tmp_path / "nowhere") == "from-file"


@pytest.mark.timeout(10)  # opening a FIFO for reading waits for a writer
def test_a_fifo_is_ignored_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.warns(tokens.TokenFileIgnored, match="not a regular file"):
        assert _discover({"BEARER_TOKEN_FILE": str(fifo)}, tmp_path) is None


def test_the_checked_file_is_the_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file swapped in after any check by path, just before the open, is still caught."""
    path, planted = tmp_path / "tok", tmp_path / "planted"
    path.write_text("good")
    planted.write_text("evil")
    planted.chmod(0o666)
    real_open = os.open

    def swap_then_open(target: Any, flags: int, *args: Any) -> int:
        if Path(target) == path:
            os.replace(planted, path)
        return real_open(target, flags, *args)

    monkeypatch.setattr(os, "open", swap_then_open)
    with pytest.warns(tokens.TokenFileIgnored, match="writable by group or others"):
        assert _discover({"BEARER_TOKEN_FILE": str(path)}, tmp_path) is None


# Storage --------------------------------------------------------------------------------------


def test_write_token_file_is_private_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "bt_u1000"
    path.write_text("old")
    path.chmod(0o644)
    tokens.write_token_file(path, "  new-token\n")
    assert path.read_text() == "new-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["bt_u1000"]


def test_write_token_file_is_0600_before_it_is_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((stat.S_IMODE(os.stat(src).st_mode), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    old = os.umask(0)  # even a careless umask must not widen the mode
    try:
        tokens.write_token_file(tmp_path / "tok", "secret")
    finally:
        os.umask(old)
    assert seen == [(0o600, "secret")]


def test_write_token_file_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tok"
    path.write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        tokens.write_token_file(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


# Inspection -----------------------------------------------------------------------------------


@given(st.text())
def test_redact_never_returns_the_token(token: str) -> None:
    shown = tokens.redact(token)
    assert shown != token
    assert shown == tokens.redact(token)
    if len(token) >= 10:
        assert token not in shown


def test_redact_keeps_a_prefix_of_long_tokens() -> None:
    assert tokens.redact("eyJhbGciOiJSUzI1NiJ9.payload.signature").startswith("eyJhbG…#")
    assert tokens.redact(None) == "<no token>"


def test_claims_unverified(fake_issuer: FakeIssuer) -> None:
    token = fake_issuer.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert tokens.token_claims_unverified(token)["sub"] == "a01cd6a6-alice"
    with pytest.raises(tokens.InvalidToken, match="malformed"):
        tokens.token_claims_unverified("not-a-jwt")


# Validation -----------------------------------------------------------------------------------


def test_exception_hierarchy() -> None:
    for cls in (tokens.BadSignature, tokens.WrongIssuer, tokens.WrongAudience):
        assert issubclass(cls, tokens.InvalidToken)
    for cls in (tokens.ExpiredToken, tokens.InvalidToken, tokens.IssuerUnavailable):
        assert issubclass(cls, tokens.TokenError)


def test_good_token(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    claims = validator.validate(fake_issuer.token())
    assert claims["sub"] == "a01cd6a6-alice"
    assert claims["aud"] == AUD


async def test_good_token_async(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    claims = await validator.avalidate(fake_issuer.token(aud=["x", "https://other"]))
    assert claims["scope"] == "compute.read"


def _rejects(
    validator: tokens.TokenValidator, token: str, exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match) as info:
        validator.validate(token)
    assert token not in str(info.value)


def test_expired(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    past = int(time.time()) - 100
    token = fake_issuer.token(iat=past - 60, nbf=past - 60, exp=past)
    _rejects(validator, token, tokens.ExpiredToken, "expired")
    lenient = tokens.TokenValidator(fake_issuer.url, AUD, leeway=200)
    assert lenient.validate(token)["exp"] == past


def test_wrongly_signed_with_same_kid(
    fake_issuer: FakeIssuer, validator: tokens.TokenValidator
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _rejects(validator, fake_issuer.token(key=other), tokens.BadSignature, "bad signature")


def test_tampered_payload(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    header, _, signature = fake_issuer.token().split(".")
    claims = tokens.token_claims_unverified(fake_issuer.token())
    claims["sub"] = "mallory"
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _rejects(validator, f"{header}.{payload}.{signature}", tokens.BadSignature, "bad signature")


def test_unknown_kid(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    now = int(time.time())
    claims = {"iss": fake_issuer.url, "sub": "x", "aud": AUD, "iat": now, "exp": now + 60}
    token = jwt.encode(claims, fake_issuer.key, algorithm="RS256", headers={"kid": "other"})
    _rejects(validator, token, tokens.BadSignature, "no key with kid 'other'")


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def own_issuer() -> Iterator[FakeIssuer]:
    """An issuer for one test, which may rotate its keys and counts the JWKS requests."""
    issuer = FakeIssuer()
    yield issuer
    issuer.server.shutdown()
    issuer.server.server_close()


@pytest.mark.security
def test_made_up_kids_cause_at_most_one_refetch_per_interval(own_issuer: FakeIssuer) -> None:
    clock = FakeClock()
    validator = tokens.TokenValidator(own_issuer.url, AUD, clock=clock)
    assert validator.refetch_interval == 30.0
    validator.validate(own_issuer.token())
    assert own_issuer.jwks_requests == 1
    clock.now += 31  # past the refetch interval, well within the keys' lifespan
    for _ in range(20):
        kid = os.urandom(8).hex()
        _rejects(
            validator,
            own_issuer.token(kid=kid),
            tokens.BadSignature,
            f"no key with kid '{kid}' published by {own_issuer.url}",
        )
        clock.now += 1
    assert own_issuer.jwks_requests == 2  # the first made-up kid asked again, no other did
    validator.validate(own_issuer.token())  # the known key needs no request either
    assert own_issuer.jwks_requests == 2


def test_a_rotated_key_is_picked_up_after_the_interval(own_issuer: FakeIssuer) -> None:
    clock = FakeClock()
    validator = tokens.TokenValidator(own_issuer.url, AUD, clock=clock)
    validator.validate(own_issuer.token())
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    own_issuer.rotated["test-key-2"] = new_key
    rotated = own_issuer.token(key=new_key, kid="test-key-2")
    clock.now += 10  # the keys were fetched 10 s ago: not asked again yet
    _rejects(validator, rotated, tokens.BadSignature, "no key with kid 'test-key-2'")
    assert own_issuer.jwks_requests == 1
    clock.now += 20
    assert validator.validate(rotated)["sub"] == "a01cd6a6-alice"
    assert own_issuer.jwks_requests == 2
    validator.validate(own_issuer.token())  # the old key is still published, still known
    assert own_issuer.jwks_requests == 2


def test_keys_are_fetched_again_once_their_lifespan_is_over(own_issuer: FakeIssuer) -> None:
    clock = FakeClock()
    validator = tokens.TokenValidator(own_issuer.url, AUD, jwks_lifespan=300, clock=clock)
    validator.validate(own_issuer.token())
    clock.now += 299
    validator.validate(own_issuer.token())
    assert own_issuer.jwks_requests == 1
    own_issuer.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # same kid
    clock.now += 1
    validator.validate(own_issuer.token())  # the new key under the old kid: only after a fetch
    assert own_issuer.jwks_requests == 2


def test_wrong_audience(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    token = fake_issuer.token(aud=tokens.WLCG_ANY_AUDIENCE)
    _rejects(validator, token, tokens.WrongAudience, "wrong audience")
    anyone = tokens.TokenValidator(fake_issuer.url, [AUD, tokens.WLCG_ANY_AUDIENCE])
    assert anyone.validate(token)["aud"] == tokens.WLCG_ANY_AUDIENCE


def test_wrong_issuer(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    token = fake_issuer.token(iss="https://evil.example")
    _rejects(validator, token, tokens.WrongIssuer, "wrong issuer 'https://evil.example'")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub"])
def test_required_claims(
    fake_issuer: FakeIssuer, validator: tokens.TokenValidator, claim: str
) -> None:
    _rejects(validator, fake_issuer.token(**{claim: None}), tokens.InvalidToken, claim)


def test_not_yet_valid(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    future = int(time.time()) + 300
    _rejects(validator, fake_issuer.token(nbf=future), tokens.InvalidToken, "not valid yet")


def test_disallowed_algorithms(fake_issuer: FakeIssuer, validator: tokens.TokenValidator) -> None:
    now = int(time.time())
    claims = {"iss": fake_issuer.url, "sub": "x", "aud": AUD, "iat": now, "exp": now + 60}
    hs = jwt.encode(claims, "a-shared-secret-of-32-bytes-len!", algorithm="HS256")
    _rejects(validator, hs, tokens.InvalidToken, "'HS256' not allowed")
    unsigned = jwt.encode(claims, None, algorithm="none")
    _rejects(validator, unsigned, tokens.InvalidToken, "'none' not allowed")
    _rejects(validator, "garbage", tokens.InvalidToken, "malformed")


def test_unreachable_issuer(fake_issuer: FakeIssuer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = tokens.TokenValidator(f"http://127.0.0.1:{port}", AUD, timeout=2)
    with pytest.raises(tokens.IssuerUnavailable, match=f"cannot fetch http://127.0.0.1:{port}/"):
        dead.validate(fake_issuer.token())


def test_discovery_must_name_the_issuer(fake_issuer: FakeIssuer) -> None:
    with pytest.raises(tokens.IssuerUnavailable, match="names issuer"):
        tokens.fetch_discovery(fake_issuer.url + "/")


def test_token_request_error_and_basic_auth(fake_issuer: FakeIssuer) -> None:
    with pytest.raises(tokens.TokenRequestError) as info:
        tokens.refresh_access_token(
            f"{fake_issuer.url}/token", "rt", client_id="hub:x", client_secret="s&:/"
        )
    assert (info.value.error, info.value.description, info.value.status) == (
        "invalid_grant",
        "nope",
        400,
    )
    assert fake_issuer.last_auth is not None
    decoded = base64.b64decode(fake_issuer.last_auth.split()[1]).decode()
    assert decoded == "hub%3Ax:s%26%3A%2F"  # RFC 6749 §2.3.1: form-encode, then Basic
