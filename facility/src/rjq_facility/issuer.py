"""The facility's OIDC issuer: a small but real token service for tests and the demo.

Real facilities use INDIGO IAM; here nothing may reach the Internet, so this stands in for it
with the parts the project relies on: discovery, a JWKS, RS256 access tokens with WLCG-profile
claims, the password, refresh, authorization-code (for JupyterHub), RFC 8693 token-exchange and
RFC 8628 device-authorization grants (`remote-jobqueue login` from a laptop), a login form and a
device page, RFC 7009 revocation of refresh tokens, and userinfo. Lifetimes (and the device
flow's polling interval) can be chosen per request, so tests can make tokens expire in a second.

State lives in ``<state>/issuer/`` (directory 0700, files 0600), created on first start and
reused after: ``signing-key.pem`` (RSA), ``users.json`` (random passwords, opaque ``sub`` UUIDs,
``wlcg.groups``), ``clients.json`` (``jupyterhub`` confidential, ``remote-jobqueue`` public),
``refresh-tokens.json`` (SHA-256 hashes of live refresh tokens, so they survive a restart).
Device codes, like authorization codes, live in memory only: a restart ends pending logins.

Run: ``python -m rjq_facility.issuer --state-dir DIR --host H --port P
--issuer-url URL``. It never logs a token: only grant types, user names and client ids.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import posixpath
import secrets
import signal
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.escape import xhtml_escape

from remote_jobqueue import tokens

from .config import FacilityConfig
from .processes import pid_of, start_daemon, stop_daemon

log = logging.getLogger("rjq_facility.issuer")

NAME = "issuer"
PUBLIC_CLIENT = "remote-jobqueue"
HUB_CLIENT = "jupyterhub"
DEFAULT_SCOPE = (
    "openid profile compute.create compute.read compute.modify compute.cancel storage.read:/"
)
DEFAULT_ACCESS_LIFETIME = 3600
DEFAULT_REFRESH_LIFETIME = 30 * 86400
MAX_LIFETIME = 30 * 86400
CODE_LIFETIME = 120
ALL_GRANTS = ["password", "refresh_token", "authorization_code", tokens.TOKEN_EXCHANGE_GRANT]
#: RFC 8628: for clients without a browser of their own (a laptop's terminal); public client only.
DEVICE_CODE_GRANT = tokens.DEVICE_CODE_GRANT
PUBLIC_GRANTS = [*ALL_GRANTS, DEVICE_CODE_GRANT]
DEVICE_CODE_LIFETIME = 600
MAX_DEVICE_CODE_LIFETIME = 3600
DEVICE_INTERVAL = 5.0
MAX_DEVICE_INTERVAL = 60.0
#: RFC 8628 §3.5: after ``slow_down`` the interval grows by 5 s, for good.
SLOW_DOWN_STEP = 5.0
#: RFC 8628 §6.1: consonants only (no words, no 0/O or 1/I to confuse), 8 of them: 2^34 codes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068: keeps ID tokens from being used as access tokens


# State on disk --------------------------------------------------------------------------------


def issuer_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "issuer"


def issued_tokens_path(state_dir: Path) -> Path:
    """Where the development issuer lists every token it issued (see `Issuer._record`)."""
    return issuer_dir(state_dir) / "issued-tokens"


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _dump_json(path: Path, data: Any) -> None:
    tokens.write_private_file(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def ensure_state(
    state_dir: Path,
    users: Iterable[str],
    issuer_url: str,
    redirect_hosts: Iterable[str] = (),
) -> None:
    """Create what is missing (key, users, clients); never replace what exists.

    Idempotent so that ``up`` can call it before the daemon starts (helpers can then read
    passwords at once) and the daemon again, and so that a restart keeps every credential.
    A public client made before the device grant existed gets that grant added (no secret
    changes).
    """
    d = issuer_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    key_path = d / "signing-key.pem"
    if not key_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tokens.write_private_file(key_path, pem)
    users_path = d / "users.json"
    known: dict[str, Any] = _load_json(users_path) if users_path.exists() else {}
    missing = [u for u in users if u not in known]
    for user in missing:
        known[user] = {
            "password": secrets.token_urlsafe(12),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{issuer_url}#{user}")),
            "groups": ["/facility", f"/facility/{user}"],
        }
    if missing or not users_path.exists():
        _dump_json(users_path, known)
    clients_path = d / "clients.json"
    if not clients_path.exists():
        hosts = sorted({"127.0.0.1", "localhost", "::1", *redirect_hosts})
        _dump_json(
            clients_path,
            {
                HUB_CLIENT: {
                    "secret": secrets.token_urlsafe(32),
                    "grant_types": ALL_GRANTS,
                    "redirect_hosts": hosts,
                },
                PUBLIC_CLIENT: {
                    "secret": None,
                    "grant_types": PUBLIC_GRANTS,
                    "redirect_hosts": hosts,
                },
            },
        )
    else:
        clients = _load_json(clients_path)
        public = clients.get(PUBLIC_CLIENT)
        if public is not None and DEVICE_CODE_GRANT not in public["grant_types"]:
            public["grant_types"] = [*public["grant_types"], DEVICE_CODE_GRANT]
            _dump_json(clients_path, clients)


# Scopes ---------------------------------------------------------------------------------------


def _under(path: str, base: str) -> bool:
    path = posixpath.normpath("/" + path.lstrip("/"))  # normpath keeps a leading "//"
    base = posixpath.normpath("/" + base.lstrip("/"))
    return base == "/" or path == base or path.startswith(base + "/")


def scope_covers(granted: Iterable[str], requested: Iterable[str]) -> bool:
    """Is every requested scope within the granted ones? (``storage.X:/a/b`` ⊂ ``storage.X:/a``).

    Refresh and exchange may only narrow what the user was given, as the WLCG profile expects.
    """
    granted = set(granted)
    for scope in requested:
        if scope in granted:
            continue
        name, sep, path = scope.partition(":")
        if not (sep and name.startswith("storage.")):
            return False
        if not any(
            g.partition(":")[0] == name
            and g.partition(":")[1]
            and _under(path, g.partition(":")[2])
            for g in granted
        ):
            return False
    return True


# The service ----------------------------------------------------------------------------------


class OAuthError(Exception):
    """An RFC 6749 error response; the description must never contain a token."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


def _jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: a ``kid`` that is stable for the key and needs no bookkeeping."""
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalize_user_code(code: str | None) -> str:
    """What a person typed, as the issuer keeps it: case, dashes and spaces do not matter."""
    return "".join(ch for ch in (code or "").upper() if ch.isalnum())


def format_user_code(code: str) -> str:
    """``WDJBMJHT`` → ``WDJB-MJHT``: easier to read out and type."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


@dataclass
class DeviceGrant:
    """One RFC 8628 device authorization, from the device's request to its single use."""

    client_id: str
    scope: list[str]
    aud: str | list[str]
    user_code: str  # normalized
    expires_at: float
    interval: float
    last_poll: float | None = None
    user: str | None = None  # who approved it
    denied: bool = False

    @property
    def decided(self) -> bool:
        return self.user is not None or self.denied


class Issuer:
    """Keys, users, clients and the grant logic, apart from HTTP so it reads as the spec does."""

    def __init__(
        self,
        state_dir: Path,
        issuer_url: str,
        *,
        access_lifetime: int = DEFAULT_ACCESS_LIFETIME,
        refresh_lifetime: int = DEFAULT_REFRESH_LIFETIME,
        rotate_refresh_tokens: bool = True,
        device_interval: float = DEVICE_INTERVAL,
        device_code_lifetime: int = DEVICE_CODE_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        d = issuer_dir(state_dir)
        self.url = issuer_url
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.rotate = rotate_refresh_tokens
        self.device_interval = device_interval
        self.device_code_lifetime = device_code_lifetime
        #: Time of the device flow (expiry, polling pace): tests pass a clock they move.
        self.clock = clock
        key = serialization.load_pem_private_key((d / "signing-key.pem").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key = key
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.kid = _jwk_thumbprint(jwk)
        self.jwk = {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}
        self.users: dict[str, Any] = _load_json(d / "users.json")
        self.clients: dict[str, Any] = _load_json(d / "clients.json")
        self.redirect_hosts = {"127.0.0.1", "localhost", "::1"}
        if host := urllib.parse.urlsplit(issuer_url).hostname:
            self.redirect_hosts.add(host)
        self.refresh_path = d / "refresh-tokens.json"
        self.refresh: dict[str, Any] = (
            _load_json(self.refresh_path) if self.refresh_path.exists() else {}
        )
        self.codes: dict[str, dict[str, Any]] = {}
        #: Device grants by the SHA-256 of their device code; user code → that hash.
        self.devices: dict[str, DeviceGrant] = {}
        self.user_codes: dict[str, str] = {}
        #: Every token issued, one per line (0600): what the test suite greps logs, job ads
        #: and process arguments for. A development issuer's convenience; no real one does it.
        self.issued_path = issued_tokens_path(state_dir)

    def _record(self, *issued: str | None) -> None:
        fd = os.open(self.issued_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as f:
            f.writelines(f"{token}\n" for token in issued if token)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "jwks_uri": f"{self.url}/jwks",
            "device_authorization_endpoint": f"{self.url}/device_authorization",
            "revocation_endpoint": f"{self.url}/revoke",
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "grant_types_supported": PUBLIC_GRANTS,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256", "plain"],
            "scopes_supported": [
                *DEFAULT_SCOPE.split(),
                "offline_access",
                "wlcg",
                "wlcg.groups",
                "storage.read:/",
                "storage.create:/",
                "storage.modify:/",
            ],
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "nbf",
                "jti",
                "scope",
                "wlcg.ver",
                "wlcg.groups",
                "preferred_username",
                "client_id",
                "act",
            ],
        }

    # Clients and users ------------------------------------------------------------------------
    def authenticate_client(
        self, basic: str | None, form_id: str | None, form_secret: str | None
    ) -> str:
        """Client id after RFC 6749 §2.3 authentication (HTTP Basic or form parameters)."""
        client_id, secret = form_id, form_secret
        if basic is not None:
            try:
                decoded = base64.b64decode(basic, validate=True).decode()
            except ValueError:
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            raw_id, _, raw_secret = decoded.partition(":")
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
        client = self.clients.get(client_id or "")
        if client is None:
            raise OAuthError("invalid_client", f"unknown client {client_id!r}", 401)
        expected = client.get("secret")
        if expected and not (secret and hmac.compare_digest(secret, expected)):
            raise OAuthError("invalid_client", f"client {client_id!r} failed to authenticate", 401)
        assert client_id is not None
        return client_id

    def check_redirect(self, client_id: str | None, redirect_uri: str | None) -> str:
        client = self.clients.get(client_id or "")
        if client is None:
            raise OAuthError("invalid_client", f"unknown client {client_id!r}")
        if not redirect_uri:
            raise OAuthError("invalid_request", "redirect_uri is required")
        parts = urllib.parse.urlsplit(redirect_uri)
        hosts = self.redirect_hosts | set(client.get("redirect_hosts", []))
        if parts.scheme not in ("http", "https") or parts.hostname not in hosts or parts.fragment:
            raise OAuthError("invalid_request", f"redirect_uri not allowed for {client_id!r}")
        return redirect_uri

    def check_password(self, username: str | None, password: str | None) -> dict[str, Any]:
        user = self.users.get(username or "")
        if user is None or not password or not hmac.compare_digest(password, user["password"]):
            raise OAuthError("invalid_grant", "wrong username or password")
        return user

    # Tokens -----------------------------------------------------------------------------------
    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        return jwt.encode(
            claims, self.key, algorithm="RS256", headers={"kid": self.kid, "typ": typ}
        )

    def verify_access_token(self, token: str, error: str = "invalid_token") -> dict[str, Any]:
        """Claims of one of *our* access tokens, for any audience (exchange, userinfo)."""
        try:
            if jwt.get_unverified_header(token).get("typ") != ACCESS_TOKEN_TYP:
                raise OAuthError(error, "not an access token")
            return jwt.decode(
                token,
                self.key.public_key(),
                algorithms=["RS256"],
                issuer=self.url,
                options={"verify_aud": False, "require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise OAuthError(error, "token expired") from None
        except jwt.PyJWTError as err:
            raise OAuthError(error, f"token rejected ({type(err).__name__})") from None

    def issue(
        self,
        username: str,
        client_id: str,
        scope: list[str],
        audience: str | list[str],
        lifetime: int,
        *,
        refresh: bool,
        nonce: str | None = None,
        act: dict[str, Any] | None = None,
        keep_refresh_token: str | None = None,
        refresh_grant: tuple[list[str], str | list[str]] | None = None,
    ) -> dict[str, Any]:
        """A token response; ``refresh`` records a new refresh token bound to the client.

        A rotated refresh token keeps the scope and audience of the grant (``refresh_grant``),
        not the narrower ones of this one access token (RFC 6749 §6).
        """
        user = self.users[username]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": user["sub"],
            "aud": audience,
            "exp": now + lifetime,
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "scope": " ".join(scope),
            "wlcg.ver": "1.0",
            "wlcg.groups": user["groups"],
            "preferred_username": username,
            "client_id": client_id,
        }
        if act:
            claims["act"] = act
        response: dict[str, Any] = {
            "access_token": self._sign(claims, ACCESS_TOKEN_TYP),
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": " ".join(scope),
        }
        if refresh:
            grant_scope, grant_aud = refresh_grant or (scope, audience)
            response["refresh_token"] = keep_refresh_token or self._new_refresh_token(
                username, client_id, grant_scope, grant_aud
            )
        if "openid" in scope:
            id_claims: dict[str, Any] = {
                "iss": self.url,
                "sub": user["sub"],
                "aud": client_id,
                "azp": client_id,
                "exp": now + lifetime,
                "iat": now,
                "auth_time": now,
                "preferred_username": username,
                "name": username,
                "wlcg.groups": user["groups"],
            }
            if nonce:
                id_claims["nonce"] = nonce
            response["id_token"] = self._sign(id_claims, "JWT")
        self._record(
            response["access_token"], response.get("refresh_token"), response.get("id_token")
        )
        return response

    def service_token(
        self, subject: str, scope: list[str], audience: str | list[str], lifetime: int
    ) -> str:
        """An access token for one of the facility's own services (a cache reading upstream):
        no user, no refresh token; recorded with the rest (the suite's leak checks)."""
        now = int(time.time())
        claims = {
            "iss": self.url, "sub": subject, "aud": audience, "exp": now + lifetime,
            "iat": now, "nbf": now, "jti": str(uuid.uuid4()), "scope": " ".join(scope),
            "wlcg.ver": "1.0",
        }  # fmt: skip
        token = self._sign(claims, ACCESS_TOKEN_TYP)
        self._record(token)
        return token

    def _new_refresh_token(
        self, username: str, client_id: str, scope: list[str], audience: str | list[str]
    ) -> str:
        token = secrets.token_urlsafe(48)
        now = time.time()
        self.refresh = {h: r for h, r in self.refresh.items() if r["exp"] > now}
        self.refresh[_hash(token)] = {
            "user": username,
            "client_id": client_id,
            "scope": scope,
            "aud": audience,
            "exp": int(now) + self.refresh_lifetime,
        }
        _dump_json(self.refresh_path, self.refresh)
        return token

    def use_refresh_token(self, token: str | None, client_id: str) -> dict[str, Any]:
        record = self.refresh.get(_hash(token or ""))
        if record is None or record["exp"] <= time.time():
            raise OAuthError("invalid_grant", "unknown, used or expired refresh token")
        if record["client_id"] != client_id:
            raise OAuthError("invalid_grant", "refresh token was issued to another client")
        if self.rotate:
            del self.refresh[_hash(token or "")]
            _dump_json(self.refresh_path, self.refresh)
        return record

    def new_code(self, params: dict[str, Any]) -> str:
        now = time.time()
        self.codes = {c: p for c, p in self.codes.items() if p["exp"] > now}
        code = secrets.token_urlsafe(32)
        self.codes[code] = {**params, "exp": now + CODE_LIFETIME}
        return code

    def use_code(
        self, code: str | None, client_id: str, redirect_uri: str | None, verifier: str | None
    ) -> dict[str, Any]:
        params = self.codes.pop(code or "", None)  # single use, even when the request fails
        if params is None or params["exp"] <= time.time():
            raise OAuthError("invalid_grant", "unknown, used or expired authorization code")
        if params["client_id"] != client_id:
            raise OAuthError("invalid_grant", "code was issued to another client")
        if params["redirect_uri"] != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        challenge = params.get("code_challenge")
        if challenge:
            if not verifier:
                raise OAuthError("invalid_grant", "code_verifier is required (PKCE)")
            if params.get("code_challenge_method") == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                verifier = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not hmac.compare_digest(verifier, challenge):
                raise OAuthError("invalid_grant", "code_verifier does not match (PKCE)")
        return params

    def revoke(self, token: str, client_id: str) -> str | None:
        """RFC 7009: make a refresh token unusable; returns its user, None if it was unknown.

        An unknown token is no error (it may be revoked already); one of another client is.
        Access tokens are JWTs that nobody looks up, so they live until they expire.
        """
        record = self.refresh.get(_hash(token))
        if record is None:
            try:
                self.verify_access_token(token)
            except OAuthError:
                return None  # nothing of ours, or an access token that is dead already
            raise OAuthError(
                "unsupported_token_type", "access tokens cannot be revoked: they expire"
            )
        if record["client_id"] != client_id:
            raise OAuthError("unauthorized_client", "the token was issued to another client")
        del self.refresh[_hash(token)]
        _dump_json(self.refresh_path, self.refresh)
        return record["user"]

    # The device flow (RFC 8628) -----------------------------------------------------------------
    def new_device_grant(
        self,
        client_id: str,
        scope: list[str],
        audience: str | list[str],
        *,
        interval: float | None = None,
        lifetime: int | None = None,
    ) -> tuple[str, DeviceGrant]:
        """A device code (the device's secret) and its grant, whose user code a person types."""
        now = self.clock()
        for key in [k for k, g in self.devices.items() if g.expires_at + CODE_LIFETIME < now]:
            self._drop_device(key)  # expired ones stay a little, so polls get expired_token
        while True:
            user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
            if user_code not in self.user_codes:
                break
        device_code = secrets.token_urlsafe(32)
        grant = DeviceGrant(
            client_id=client_id,
            scope=scope,
            aud=audience,
            user_code=user_code,
            expires_at=now + (self.device_code_lifetime if lifetime is None else lifetime),
            interval=self.device_interval if interval is None else interval,
        )
        self.devices[_hash(device_code)] = grant
        self.user_codes[user_code] = _hash(device_code)
        self._record(device_code)  # a credential too: the suite checks it never leaks
        return device_code, grant

    def _drop_device(self, key: str) -> None:
        grant = self.devices.pop(key, None)
        if grant is not None:
            self.user_codes.pop(grant.user_code, None)

    def pending_device_grant(self, user_code: str | None) -> DeviceGrant:
        """The grant a person's user code names, if it still waits for a decision."""
        key = self.user_codes.get(normalize_user_code(user_code))
        grant = self.devices.get(key) if key else None
        if grant is None or grant.decided or grant.expires_at <= self.clock():
            raise OAuthError("invalid_request", "unknown, expired or already used code")
        return grant

    def decide_device_grant(
        self, user_code: str | None, username: str, approve: bool
    ) -> DeviceGrant:
        """The logged-in person's answer; the device learns it at its next poll."""
        grant = self.pending_device_grant(user_code)
        if approve:
            grant.user = username
        else:
            grant.denied = True
        return grant

    def use_device_code(self, device_code: str | None, client_id: str) -> DeviceGrant:
        """One poll of the token endpoint (RFC 8628 §3.5); the approved grant, used up, or the
        error the device must act on: wait, slow down, stop."""
        key = _hash(device_code or "")
        grant = self.devices.get(key)
        if grant is None or grant.client_id != client_id:
            raise OAuthError("invalid_grant", "unknown or already used device code")
        now = self.clock()
        if grant.expires_at <= now:
            self._drop_device(key)
            raise OAuthError("expired_token", "the device code expired: start again")
        too_soon = grant.last_poll is not None and now - grant.last_poll < grant.interval
        grant.last_poll = now
        if too_soon:
            grant.interval += SLOW_DOWN_STEP
            raise OAuthError("slow_down", f"poll at most every {grant.interval:g} s")
        if grant.denied:
            self._drop_device(key)
            raise OAuthError("access_denied", "the user denied the request")
        if grant.user is None:
            raise OAuthError("authorization_pending", "the user has not answered yet")
        self._drop_device(key)  # single use
        return grant


# HTTP -----------------------------------------------------------------------------------------


def _split_scope(value: str | None, default: Sequence[str]) -> list[str]:
    return value.split() if value and value.strip() else list(default)


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _audience(values: list[str], default: str | list[str]) -> str | list[str]:
    auds = list(dict.fromkeys(a for v in values for a in v.split()))  # query + form repeat
    if not auds:
        return default
    return auds[0] if len(auds) == 1 else auds


class _Handler(tornado.web.RequestHandler):
    @property
    def issuer(self) -> Issuer:
        return self.application.settings["issuer"]

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")


class DiscoveryHandler(_Handler):
    def get(self) -> None:
        self.finish(self.issuer.discovery())


class JwksHandler(_Handler):
    def get(self) -> None:
        self.finish({"keys": [self.issuer.jwk]})


class _ClientHandler(_Handler):
    """Endpoints a client POSTs a form to, authenticated as RFC 6749 §2.3 says."""

    def arg(self, name: str) -> str | None:
        return self.get_body_argument(name, None)

    def number(self, name: str, default: float, high: float, *, integer: bool = True) -> float:
        """A numeric form parameter within ``0..high``, or ``default`` if absent."""
        raw = self.arg(name)
        if raw is None or raw == "":
            return default
        kind = "an integer" if integer else "a number"
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            raise OAuthError("invalid_request", f"{name} must be {kind}") from None
        if not 0 <= value <= high:
            raise OAuthError("invalid_request", f"{name} must be within 0..{high:g}")
        return value

    def authenticate(self) -> str:
        auth = self.request.headers.get("Authorization", "")
        basic = auth[6:].strip() if auth[:6].lower() == "basic " else None
        return self.issuer.authenticate_client(
            basic, self.arg("client_id"), self.arg("client_secret")
        )

    def refuse(self, err: OAuthError) -> None:
        self.set_status(err.status)
        if err.status == 401:
            self.set_header("WWW-Authenticate", 'Basic realm="token"')
        self.finish({"error": err.error, "error_description": err.description})


class TokenHandler(_ClientHandler):
    def lifetime(self, default: int) -> int:
        return int(self.number("expires_in", default, MAX_LIFETIME))

    def post(self) -> None:
        grant = self.arg("grant_type")
        client_id = "?"
        try:
            client_id = self.authenticate()
            grants: dict[str, Callable[[str], dict[str, Any]]] = {
                "password": self.password,
                "refresh_token": self.refresh_token,
                "authorization_code": self.authorization_code,
                tokens.TOKEN_EXCHANGE_GRANT: self.token_exchange,
                DEVICE_CODE_GRANT: self.device_code,
            }
            if grant not in grants:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} not supported")
            if grant not in self.issuer.clients[client_id]["grant_types"]:
                raise OAuthError("unauthorized_client", f"{client_id!r} may not use {grant!r}")
            response = grants[grant](client_id)
        except OAuthError as err:
            # A waiting device polls every few seconds: that is no refusal worth a warning.
            level = logging.DEBUG if err.error == "authorization_pending" else logging.WARNING
            log.log(level, "token request refused: grant=%s client=%s %s", grant, client_id, err)
            self.refuse(err)
            return
        self.finish(response)

    def password(self, client_id: str) -> dict[str, Any]:
        username = self.arg("username")
        self.issuer.check_password(username, self.arg("password"))
        assert username is not None
        log.info("grant=password client=%s user=%s", client_id, username)
        return self.issuer.issue(
            username,
            client_id,
            _split_scope(self.arg("scope"), DEFAULT_SCOPE.split()),
            _audience(self.get_body_arguments("audience"), tokens.WLCG_ANY_AUDIENCE),
            self.lifetime(self.issuer.access_lifetime),
            refresh=True,
        )

    def refresh_token(self, client_id: str) -> dict[str, Any]:
        old = self.arg("refresh_token")
        record = self.issuer.use_refresh_token(old, client_id)
        scope = _split_scope(self.arg("scope"), record["scope"])
        if not scope_covers(record["scope"], scope):
            raise OAuthError("invalid_scope", "refresh may only narrow the granted scope")
        log.info("grant=refresh_token client=%s user=%s", client_id, record["user"])
        return self.issuer.issue(
            record["user"],
            client_id,
            scope,
            _audience(self.get_body_arguments("audience"), record["aud"]),
            self.lifetime(self.issuer.access_lifetime),
            refresh=True,
            keep_refresh_token=None if self.issuer.rotate else old,
            refresh_grant=(record["scope"], record["aud"]),
        )

    def authorization_code(self, client_id: str) -> dict[str, Any]:
        params = self.issuer.use_code(
            self.arg("code"), client_id, self.arg("redirect_uri"), self.arg("code_verifier")
        )
        log.info("grant=authorization_code client=%s user=%s", client_id, params["user"])
        return self.issuer.issue(
            params["user"],
            client_id,
            params["scope"],
            params["aud"],
            self.lifetime(self.issuer.access_lifetime),
            refresh=True,
            nonce=params.get("nonce"),
        )

    def token_exchange(self, client_id: str) -> dict[str, Any]:
        if self.arg("subject_token_type") != tokens.ACCESS_TOKEN_TYPE:
            raise OAuthError("invalid_request", "subject_token_type must be an access token")
        requested = self.arg("requested_token_type")
        if requested not in (None, "", tokens.ACCESS_TOKEN_TYPE):
            raise OAuthError("invalid_request", "only access tokens can be requested")
        subject = self.issuer.verify_access_token(
            self.arg("subject_token") or "", "invalid_request"
        )
        username = subject.get("preferred_username")
        if username not in self.issuer.users:
            raise OAuthError("invalid_grant", "subject token names no known user")
        granted = subject.get("scope", "").split()
        scope = _split_scope(self.arg("scope"), granted)
        if not scope_covers([*granted, "offline_access"], scope):
            raise OAuthError("invalid_scope", "exchange may only narrow the subject's scope")
        act = {"sub": client_id, **({"act": subject["act"]} if "act" in subject else {})}
        log.info("grant=token-exchange client=%s user=%s", client_id, username)
        response = self.issuer.issue(
            username,
            client_id,
            scope,
            _audience(self.get_body_arguments("audience"), tokens.WLCG_ANY_AUDIENCE),
            self.lifetime(self.issuer.access_lifetime),
            refresh="offline_access" in scope,
            act=act,
        )
        response.pop("id_token", None)
        response["issued_token_type"] = tokens.ACCESS_TOKEN_TYPE
        return response

    def device_code(self, client_id: str) -> dict[str, Any]:
        grant = self.issuer.use_device_code(self.arg("device_code"), client_id)
        assert grant.user is not None
        log.info("grant=device_code client=%s user=%s", client_id, grant.user)
        return self.issuer.issue(
            grant.user,
            client_id,
            grant.scope,
            grant.aud,
            self.lifetime(self.issuer.access_lifetime),
            refresh=True,
        )


class DeviceAuthorizationHandler(_ClientHandler):
    """RFC 8628 §3.1-3.2: a device asks to be logged in; it gets its codes and where to go.

    ``interval`` and ``expires_in`` may be asked for (a development issuer's extension, so that
    tests need not wait for the defaults).
    """

    def post(self) -> None:
        client_id = "?"
        try:
            client_id = self.authenticate()
            if DEVICE_CODE_GRANT not in self.issuer.clients[client_id]["grant_types"]:
                raise OAuthError(
                    "unauthorized_client", f"{client_id!r} may not use the device flow"
                )
            device_code, grant = self.issuer.new_device_grant(
                client_id,
                _split_scope(self.arg("scope"), DEFAULT_SCOPE.split()),
                _audience(self.get_body_arguments("audience"), tokens.WLCG_ANY_AUDIENCE),
                interval=self.number(
                    "interval", self.issuer.device_interval, MAX_DEVICE_INTERVAL, integer=False
                ),
                lifetime=int(
                    self.number(
                        "expires_in", self.issuer.device_code_lifetime, MAX_DEVICE_CODE_LIFETIME
                    )
                ),
            )
        except OAuthError as err:
            log.warning("device authorization refused: client=%s %s", client_id, err)
            self.refuse(err)
            return
        log.info("device authorization: client=%s", client_id)
        user_code = format_user_code(grant.user_code)
        verification_uri = f"{self.issuer.url}/device"
        self.finish(
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification_uri,
                "verification_uri_complete": f"{verification_uri}?"
                + urllib.parse.urlencode({"user_code": user_code}),
                "expires_in": round(grant.expires_at - self.issuer.clock()),
                "interval": _json_number(grant.interval),
            }
        )


class RevocationHandler(_ClientHandler):
    """RFC 7009: ``token`` (a refresh token) is unusable from now on; 200 even if unknown."""

    def post(self) -> None:
        client_id = "?"
        try:
            client_id = self.authenticate()
            token = self.arg("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            user = self.issuer.revoke(token, client_id)
        except OAuthError as err:
            log.warning("revocation refused: client=%s %s", client_id, err)
            self.refuse(err)
            return
        log.info("revocation: client=%s user=%s", client_id, user or "(unknown token)")
        self.finish()


LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Facility login</title></head>
<body><h1>Log in to {client}</h1>{error}
<form method="post">{hidden}
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Log in</button>
</form></body></html>
"""
AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "audience",
)


class AuthorizeHandler(_Handler):
    """Authorization endpoint: a login form, then a redirect back to the client with a code."""

    def params(self) -> dict[str, str]:
        return {
            name: value
            for name in AUTHORIZE_PARAMS
            if (value := self.get_argument(name, None)) is not None
        }

    def validate(self, params: dict[str, str]) -> bool:
        """Check client and redirect URI; on errors there answer here, never redirect."""
        try:
            self.issuer.check_redirect(params.get("client_id"), params.get("redirect_uri"))
        except OAuthError as err:
            self.set_status(400)
            self.finish(f"<p>Bad authorization request: {xhtml_escape(err.description)}</p>")
            return False
        if params.get("response_type") != "code":
            self.redirect_back(params, error="unsupported_response_type")
            return False
        if params.get("code_challenge_method", "plain") not in ("plain", "S256"):
            self.redirect_back(params, error="invalid_request")
            return False
        return True

    def redirect_back(self, params: dict[str, str], **query: str) -> None:
        if "state" in params:
            query["state"] = params["state"]
        parts = urllib.parse.urlsplit(params["redirect_uri"])
        merged = urllib.parse.urlencode([*urllib.parse.parse_qsl(parts.query), *query.items()])
        self.redirect(urllib.parse.urlunsplit(parts._replace(query=merged)), status=303)

    def login_form(self, params: dict[str, str], error: str = "") -> None:
        hidden = "".join(
            f'\n<input type="hidden" name="{k}" value="{xhtml_escape(v)}">'
            for k, v in params.items()
        )
        self.finish(
            LOGIN_PAGE.format(
                client=xhtml_escape(params["client_id"]),
                error=f"<p>{xhtml_escape(error)}</p>" if error else "",
                hidden=hidden,
            )
        )

    def get(self) -> None:
        params = self.params()
        if self.validate(params):
            self.login_form(params)

    def post(self) -> None:
        params = self.params()
        if not self.validate(params):
            return
        username = self.get_body_argument("username", None)
        try:
            self.issuer.check_password(username, self.get_body_argument("password", None))
        except OAuthError:
            log.warning("login failed: client=%s user=%s", params["client_id"], username)
            self.set_status(401)
            self.login_form(params, "Wrong username or password.")
            return
        code = self.issuer.new_code(
            {
                "user": username,
                "client_id": params["client_id"],
                "redirect_uri": params["redirect_uri"],
                "scope": _split_scope(params.get("scope"), DEFAULT_SCOPE.split()),
                "aud": _audience(self.get_arguments("audience"), tokens.WLCG_ANY_AUDIENCE),
                "nonce": params.get("nonce"),
                "code_challenge": params.get("code_challenge"),
                "code_challenge_method": params.get("code_challenge_method", "plain"),
            }
        )
        log.info("login: client=%s user=%s", params["client_id"], username)
        self.redirect_back(params, code=code)


DEVICE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Facility device login</title></head>
<body><h1>Log in a device</h1>{message}
<form method="post">
<label>Code <input name="user_code" value="{user_code}" autocomplete="off"></label>
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit" name="action" value="approve">Approve</button>
<button type="submit" name="action" value="deny">Deny</button>
</form></body></html>
"""
DEVICE_DONE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Facility device login</title></head>
<body><h1>{title}</h1><p>{message}</p></body></html>
"""


class DeviceHandler(_Handler):
    """RFC 8628 §3.3: where a person enters the device's user code, logs in and answers.

    The password is asked for with the code, so there is no session a cross-site request could
    ride on (no CSRF token needed). The password is checked before the code, so that the page
    tells nobody who has no account whether a code is live.
    """

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # The user code is in the URL (verification_uri_complete): keep it out of Referer
        # headers; and no framing, so nobody can overlay the Approve button (clickjacking).
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")

    def form(self, user_code: str, message: str = "") -> None:
        self.finish(
            DEVICE_PAGE.format(
                user_code=xhtml_escape(user_code),
                message=f"<p>{xhtml_escape(message)}</p>" if message else "",
            )
        )

    def done(self, title: str, message: str) -> None:
        self.finish(
            DEVICE_DONE_PAGE.format(title=xhtml_escape(title), message=xhtml_escape(message))
        )

    def get(self) -> None:
        self.form(self.get_query_argument("user_code", ""))

    def post(self) -> None:
        user_code = self.get_body_argument("user_code", "")
        username = self.get_body_argument("username", None)
        try:
            self.issuer.check_password(username, self.get_body_argument("password", None))
        except OAuthError:
            log.warning("device login failed: user=%s", username)
            self.set_status(401)
            self.form(user_code, "Wrong username or password.")
            return
        assert username is not None
        action = self.get_body_argument("action", "")
        if action not in ("approve", "deny"):
            self.set_status(400)
            self.form(user_code, "Choose Approve or Deny.")
            return
        approve = action == "approve"
        try:
            grant = self.issuer.decide_device_grant(user_code, username, approve)
        except OAuthError as err:
            log.warning("device code refused: user=%s %s", username, err.description)
            self.set_status(400)
            self.form(user_code, "Unknown, expired or already used code.")
            return
        verdict = "approved" if approve else "denied"
        log.info("device %s: client=%s user=%s", verdict, grant.client_id, username)
        if approve:
            scope = " ".join(grant.scope)
            self.done(
                "Device approved",
                f"{grant.client_id} gets a token for {scope}: return to your device.",
            )
        else:
            self.done("Device denied", f"{grant.client_id} gets no token.")


class UserinfoHandler(_Handler):
    def userinfo(self) -> None:
        auth = self.request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            claims = self.issuer.verify_access_token(token)
        except OAuthError as err:
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            self.finish({"error": "invalid_token", "error_description": err.description})
            return
        self.finish(
            {
                "sub": claims["sub"],
                "preferred_username": claims["preferred_username"],
                "name": claims["preferred_username"],
                "wlcg.groups": claims.get("wlcg.groups", []),
            }
        )

    get = post = userinfo


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log without query strings, where a careless client might have put a token."""
    request = handler.request
    log.info(
        "%s %s %d %.1fms",
        request.method,
        request.path,
        handler.get_status(),
        1000 * request.request_time(),
    )


def make_app(issuer: Issuer) -> tornado.web.Application:
    prefix = urllib.parse.urlsplit(issuer.url).path.rstrip("/")
    return tornado.web.Application(
        [
            (f"{prefix}/.well-known/openid-configuration", DiscoveryHandler),
            (f"{prefix}/jwks", JwksHandler),
            (f"{prefix}/token", TokenHandler),
            (f"{prefix}/authorize", AuthorizeHandler),
            (f"{prefix}/device_authorization", DeviceAuthorizationHandler),
            (f"{prefix}/device", DeviceHandler),
            (f"{prefix}/revoke", RevocationHandler),
            (f"{prefix}/userinfo", UserinfoHandler),
        ],
        issuer=issuer,
        log_function=_log_request,
    )


async def serve(issuer: Issuer, host: str, port: int) -> None:
    server = make_app(issuer).listen(port, address=host)
    log.info("issuer %s listening on %s:%d", issuer.url, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    log.info("issuer stopped")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer-url", required=True)
    parser.add_argument("--users", default="alice,bob", help="comma-separated user names")
    parser.add_argument("--access-token-lifetime", type=int, default=DEFAULT_ACCESS_LIFETIME)
    parser.add_argument("--refresh-token-lifetime", type=int, default=DEFAULT_REFRESH_LIFETIME)
    parser.add_argument(
        "--rotate-refresh-tokens",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="issue a new refresh token on every refresh and revoke the old one",
    )
    parser.add_argument(
        "--device-interval",
        type=float,
        default=DEVICE_INTERVAL,
        help="seconds a device must wait between polls (RFC 8628), unless it asks for another",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    users = [u for u in args.users.split(",") if u]
    ensure_state(args.state_dir, users, args.issuer_url)
    issuer = Issuer(
        args.state_dir,
        args.issuer_url,
        access_lifetime=args.access_token_lifetime,
        refresh_lifetime=args.refresh_token_lifetime,
        rotate_refresh_tokens=args.rotate_refresh_tokens,
        device_interval=args.device_interval,
    )
    asyncio.run(serve(issuer, args.host, args.port))


# Facility hooks and client helpers ------------------------------------------------------------


def _answers(cfg: FacilityConfig) -> bool:
    try:
        tokens.fetch_discovery(cfg.issuer_url, timeout=1.0)
    except tokens.IssuerUnavailable:
        return False
    return True


def up(cfg: FacilityConfig, timeout: float = 30.0) -> None:
    """Start the issuer detached and wait for its discovery document (no-op if running)."""
    ensure_state(cfg.state_dir, cfg.users, cfg.issuer_url, [cfg.hub_address])
    if pid_of(NAME, cfg.run) is None:
        argv = [
            sys.executable,
            "-m",
            "rjq_facility.issuer",
            "--state-dir",
            str(cfg.state_dir),
            "--host",
            cfg.hub_address,
            "--port",
            str(cfg.issuer_port),
            "--issuer-url",
            cfg.issuer_url,
            "--users",
            ",".join(cfg.users),
        ]
        start_daemon(NAME, argv, cfg.run, cfg.logs)
    deadline = time.monotonic() + timeout
    while not _answers(cfg):
        if pid_of(NAME, cfg.run) is None:
            tail = (cfg.logs / f"{NAME}.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError("the issuer exited:\n" + "\n".join(tail))
        if time.monotonic() > deadline:
            raise TimeoutError(f"the issuer does not answer at {cfg.issuer_url}")
        time.sleep(0.1)


def down(cfg: FacilityConfig) -> None:
    stop_daemon(NAME, cfg.run)


def status(cfg: FacilityConfig) -> dict[str, Any]:
    pid = pid_of(NAME, cfg.run)
    return {"running": pid is not None, "pid": pid, "url": cfg.issuer_url}


def user_password(cfg: FacilityConfig, user: str) -> str:
    """A facility user's password (random, made at first start, kept in users.json)."""
    return _load_json(issuer_dir(cfg.state_dir) / "users.json")[user]["password"]


def client_secret(cfg: FacilityConfig, client_id: str = HUB_CLIENT) -> str | None:
    """A client's secret (``None`` for public clients), e.g. for the Hub's authenticator."""
    return _load_json(issuer_dir(cfg.state_dir) / "clients.json")[client_id]["secret"]


def token_endpoint(cfg: FacilityConfig) -> str:
    return f"{cfg.issuer_url}/token"


def password_grant(
    cfg: FacilityConfig,
    user: str,
    *,
    scope: str | None = None,
    audience: str | Sequence[str] | None = None,
    expires_in: int | None = None,
    client_id: str = PUBLIC_CLIENT,
) -> dict[str, Any]:
    """A token response for ``user``, the quick way tests and the demo get tokens."""
    form: dict[str, Any] = {
        "grant_type": "password",
        "username": user,
        "password": user_password(cfg, user),
        "scope": scope,
        "audience": [audience] if isinstance(audience, str) else audience,
        "expires_in": None if expires_in is None else str(expires_in),
    }
    return tokens.token_request(
        token_endpoint(cfg), form, client_id=client_id, client_secret=client_secret(cfg, client_id)
    )


if __name__ == "__main__":
    main()
