"""OIDC bearer tokens (WLCG profile): discovery, atomic storage, validation, refresh, exchange.

Every part of the project handles tokens, so the rules live here once: find a token the way
every WLCG tool does, write it so that no reader ever sees a partial or world-readable file,
validate it against the issuer's published keys, and never let a token reach a log line or an
exception message (use :func:`redact`).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Required, TypedDict, Unpack

import jwt

log = logging.getLogger(__name__)

#: The WLCG profile's "any resource" audience. Not accepted implicitly: list it if you mean it.
WLCG_ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"
#: RFC 8693 names.
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: RFC 8628 (`remote-jobqueue login`).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class TokenError(Exception):
    """Base of every token problem; messages never contain a token."""


class ExpiredToken(TokenError):
    """The token was valid once: refreshing it may help."""


class InvalidToken(TokenError):
    """The token can never be accepted here (malformed, forged, meant for someone else)."""


class BadSignature(InvalidToken):
    """Not signed by any key the issuer publishes."""


class WrongIssuer(InvalidToken):
    """Signed fine, but claims to come from another issuer."""


class WrongAudience(InvalidToken):
    """Meant for another resource."""


class IssuerUnavailable(TokenError):
    """Discovery or JWKS could not be fetched: the token is neither good nor bad yet."""


class TokenRequestError(TokenError):
    """The token endpoint refused a request (``error`` is the OAuth2 error code)."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(f"{error}: {description}" if description else error)


# Discovery ------------------------------------------------------------------------------------


class TokenFileIgnored(UserWarning):
    """A token file was found but not trusted (owner, mode, type): discovery went on past it."""


def _ignored(path: str | os.PathLike[str], why: str) -> None:
    message = f"ignoring token file {path}: {why}"
    log.warning("%s", message)
    warnings.warn(message, TokenFileIgnored, stacklevel=5)  # discover_bearer_token's caller


def _untrusted(st: os.stat_result, uid: int) -> str | None:
    """Why a token file with status ``st`` must not be used by ``uid``, or None if it may be.

    Only ``uid`` itself or root may own it (as sshd wants of ``authorized_keys``), and nobody else
    may be able to write it: otherwise another user could have planted their token for ours.
    """
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in (uid, 0):
        expected = "0" if uid == 0 else f"{uid} (or root)"
        return f"owned by uid {st.st_uid}, not {expected}"
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {mode:#o})"
    return None


def _read_token_file(
    path: str | os.PathLike[str], uid: int, *, follow_symlinks: bool = True
) -> str | None:
    """The token in ``path`` if the file is there, readable and trustworthy for ``uid``.

    The checks are made on the opened file (``fstat``), so swapping the file between the check
    and the read cannot fool them; ``O_NONBLOCK`` keeps a planted FIFO from hanging us.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return None
    except OSError as err:
        if err.errno == errno.ELOOP and not follow_symlinks:
            _ignored(path, "a symbolic link")
            return None
        raise
    with open(fd, "rb") as f:
        if why := _untrusted(os.fstat(fd), uid):
            _ignored(path, why)
            return None
        try:
            token = f.read().decode().strip()
        except (OSError, UnicodeDecodeError) as err:
            _ignored(path, f"unreadable ({type(err).__name__})")
            return None
    return token or None


def discover_bearer_token(
    environ: Mapping[str, str] = os.environ,
    *,
    uid: int | None = None,
    tmp_dir: str | os.PathLike[str] = "/tmp",
) -> str | None:
    """Find the caller's token in the WLCG bearer-token discovery order.

    ``BEARER_TOKEN``, ``BEARER_TOKEN_FILE``, ``$XDG_RUNTIME_DIR/bt_u<euid>``, ``/tmp/bt_u<euid>``.
    A step that is unset, empty or names a missing file falls through to the next, so a stale
    variable does not hide a good token further down.

    A token file that someone else could have put there is skipped too, with a
    :class:`TokenFileIgnored` warning (and a log line) saying why: one owned by neither ``uid``
    nor root, one writable by group or others, one that is no regular file, and at the two
    well-known paths (in ``/tmp``, anyone can create one) a symbolic link. ``BEARER_TOKEN_FILE``
    may be a link: the user chose it (Kubernetes mounts secrets as links).
    """
    found = find_bearer_token(environ, uid=uid, tmp_dir=tmp_dir)
    return found.token if found else None


@dataclass(frozen=True)
class DiscoveredToken:
    """A token found by discovery, and the file it came from (None: ``BEARER_TOKEN``)."""

    token: str
    path: Path | None


def find_bearer_token(
    environ: Mapping[str, str] = os.environ,
    *,
    uid: int | None = None,
    tmp_dir: str | os.PathLike[str] = "/tmp",
) -> DiscoveredToken | None:
    """:func:`discover_bearer_token`, saying where the token was found: so that a tool may
    renew the file it wrote itself, and only when discovery really reads that file."""
    uid = os.geteuid() if uid is None else uid
    token = environ.get("BEARER_TOKEN", "").strip()
    if token:
        return DiscoveredToken(token, None)
    candidates: list[tuple[Path, bool]] = []
    if environ.get("BEARER_TOKEN_FILE"):
        candidates.append((Path(environ["BEARER_TOKEN_FILE"]), True))
    if environ.get("XDG_RUNTIME_DIR"):
        candidates.append((Path(environ["XDG_RUNTIME_DIR"]) / f"bt_u{uid}", False))
    candidates.append((Path(tmp_dir) / f"bt_u{uid}", False))
    for path, follow_symlinks in candidates:
        found = _read_token_file(path, uid, follow_symlinks=follow_symlinks)
        if found:
            return DiscoveredToken(found, path)
    return None


def read_token_file(
    path: str | os.PathLike[str], *, uid: int | None = None, follow_symlinks: bool = False
) -> str | None:
    """The token (or other secret) in ``path``, if it is there and only ``uid`` (or root) can
    have written it; None otherwise (with a :class:`TokenFileIgnored` warning if untrusted)."""
    return _read_token_file(
        path, os.geteuid() if uid is None else uid, follow_symlinks=follow_symlinks
    )


# Storage --------------------------------------------------------------------------------------


def write_private_file(
    path: str | os.PathLike[str],
    data: str | bytes,
    *,
    uid: int | None = None,
    gid: int | None = None,
) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first byte.

    A temporary file in the same directory (so ``os.replace`` is atomic) is created 0600 by
    ``mkstemp``, optionally chowned *before* it becomes visible (a root spawner writing a
    user's token), fsynced, renamed, and the directory fsynced so the rename survives a crash.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            if uid is not None or gid is not None:
                os.fchown(f.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_token_file(
    path: str | os.PathLike[str],
    token: str,
    *,
    uid: int | None = None,
    gid: int | None = None,
) -> None:
    """Store a token for ``BEARER_TOKEN_FILE`` readers: atomic, 0600, no trailing newline."""
    write_private_file(path, token.strip(), uid=uid, gid=gid)


# Inspection -----------------------------------------------------------------------------------


def redact(token: str | None) -> str:
    """A loggable stand-in for a token: a short prefix and a fingerprint to correlate lines.

    Short strings get no prefix at all, so the result never contains a whole token.
    """
    if not token:
        return "<no token>"
    fingerprint = hashlib.sha256(token.encode()).hexdigest()[:8]
    prefix = token[:6] if len(token) >= 20 else ""
    return f"{prefix}…#{fingerprint}"


def token_claims_unverified(token: str) -> dict[str, Any]:
    """Claims of a JWT *without* checking anything: only for decisions like "refresh now?"."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError as err:
        raise InvalidToken(f"malformed token ({redact(token)})") from err


# Validation -----------------------------------------------------------------------------------


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        raise IssuerUnavailable(f"cannot fetch {url}: {err}") from err


def fetch_discovery(issuer: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """The issuer's OpenID discovery document, checked to really be about ``issuer``."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    doc = _get_json(url, timeout)
    if doc.get("issuer") != issuer:
        raise IssuerUnavailable(
            f"discovery at {url} names issuer {doc.get('issuer')!r}, expected {issuer!r}"
        )
    return doc


class TokenValidator:
    """Validate access tokens of one issuer for one resource (audience).

    Discovery and the JWKS are fetched lazily, which keeps construction free of network I/O,
    and the keys are kept: the JWKS is fetched again once it is ``jwks_lifespan`` seconds old,
    and for a token naming a ``kid`` the keys lack (the issuer may have rotated its key) at most
    once per ``refetch_interval`` seconds; other unknown kids are refused without asking the
    issuer, so made-up kids cannot turn each login into a request to it.
    """

    def __init__(
        self,
        issuer: str,
        audience: str | Sequence[str],
        *,
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway: float = 10.0,
        timeout: float = 10.0,
        jwks_lifespan: float = 300.0,
        refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.audience = [audience] if isinstance(audience, str) else list(audience)
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.timeout = timeout
        self.jwks_lifespan = jwks_lifespan
        self.refetch_interval = refetch_interval
        self.clock = clock
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None  # last JWKS that arrived
        self._fetched_at: float | None = None  # last attempt, good or not
        self._lock = threading.Lock()

    def _fetch_keys(self, now: float) -> None:
        """Replace the keys with the issuer's current JWKS (the caller holds the lock)."""
        self._fetched_at = now
        if self._jwks_uri is None:
            self._jwks_uri = fetch_discovery(self.issuer, timeout=self.timeout)["jwks_uri"]
        doc = _get_json(self._jwks_uri, self.timeout)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise IssuerUnavailable(f"{self._jwks_uri} is not a JWK set")
        try:
            published = jwt.PyJWKSet.from_dict(doc).keys
        except jwt.PyJWKSetError:  # no key usable here: as good as none
            published = []
        self._keys = {
            k.key_id: k for k in published if k.key_id and k.public_key_use in ("sig", None)
        }
        self._loaded_at = now

    def _key(self, kid: str) -> jwt.PyJWK:
        now = self.clock()
        loaded, key = self._loaded_at, self._keys.get(kid)
        if key is not None and loaded is not None and now - loaded < self.jwks_lifespan:
            return key  # the usual case: no lock, no I/O
        with self._lock:
            now = self.clock()
            if self._loaded_at is None or now - self._loaded_at >= self.jwks_lifespan:
                self._fetch_keys(now)
            elif kid not in self._keys:
                assert self._fetched_at is not None
                if now - self._fetched_at >= self.refetch_interval:
                    self._fetch_keys(now)
            if (key := self._keys.get(kid)) is None:
                raise BadSignature(f"no key with kid {kid!r} published by {self.issuer}")
            return key

    def _signing_key(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as err:
            raise InvalidToken("malformed token") from err
        if header.get("alg") not in self.algorithms:
            raise InvalidToken(f"algorithm {header.get('alg')!r} not allowed")
        kid = header.get("kid")
        if not kid or not isinstance(kid, str):
            raise InvalidToken("token header has no kid")
        return self._key(kid)

    def validate(self, token: str) -> dict[str, Any]:
        """Return the claims of a token good for us, or raise a :class:`TokenError` subclass."""
        key = self._signing_key(token)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError as err:
            raise ExpiredToken("token expired") from err
        except jwt.InvalidSignatureError as err:
            raise BadSignature("bad signature") from err
        except jwt.InvalidIssuerError as err:
            iss = token_claims_unverified(token).get("iss")
            raise WrongIssuer(f"wrong issuer {iss!r}, expected {self.issuer!r}") from err
        except jwt.InvalidAudienceError as err:
            aud = token_claims_unverified(token).get("aud")
            raise WrongAudience(f"wrong audience {aud!r}, expected one of {self.audience}") from err
        except jwt.MissingRequiredClaimError as err:
            raise InvalidToken(f"missing claim {err.claim!r}") from err
        except jwt.ImmatureSignatureError as err:
            raise InvalidToken("token not valid yet (nbf/iat in the future)") from err
        except jwt.PyJWTError as err:
            raise InvalidToken(f"invalid token: {type(err).__name__}") from err

    async def avalidate(self, token: str) -> dict[str, Any]:
        """:meth:`validate` off the event loop (fetching keys blocks)."""
        return await asyncio.to_thread(self.validate, token)


# Token endpoint client ------------------------------------------------------------------------


def _post_form(
    url: str,
    form: Mapping[str, str | Sequence[str] | None],
    *,
    client_id: str,
    client_secret: str | None = None,
    timeout: float = 10.0,
) -> bytes:
    """POST an OAuth form (token, device authorization, revocation endpoints); the body.

    Confidential clients authenticate with HTTP Basic, public ones name themselves in the form.
    """
    fields = {k: v for k, v in form.items() if v is not None}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if client_secret is None:
        fields["client_id"] = client_id
    else:
        quote = urllib.parse.quote
        basic = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
    body = urllib.parse.urlencode(fields, doseq=True).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        try:
            detail = json.load(err)
        except ValueError:
            detail = {}
        finally:
            err.close()
        raise TokenRequestError(
            detail.get("error", f"http_{err.code}"), detail.get("error_description", ""), err.code
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise IssuerUnavailable(f"cannot reach {url}: {err}") from err


def token_request(
    token_endpoint: str,
    form: Mapping[str, str | Sequence[str] | None],
    *,
    client_id: str,
    client_secret: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """POST a grant to a token endpoint (or any OAuth endpoint that answers JSON)."""
    body = _post_form(
        token_endpoint, form, client_id=client_id, client_secret=client_secret, timeout=timeout
    )
    try:
        return json.loads(body)
    except ValueError:
        raise IssuerUnavailable(f"{token_endpoint} answered no JSON") from None


class ClientOptions(TypedDict, total=False):
    """The client keywords of :func:`token_request` (defaults there), which each grant helper
    passes on as they are: the helpers only build their grant's form."""

    client_id: Required[str]
    client_secret: str | None
    timeout: float


def refresh_access_token(
    token_endpoint: str,
    refresh_token: str,
    *,
    scope: str | None = None,
    **client: Unpack[ClientOptions],
) -> dict[str, Any]:
    """Refresh grant; keep the returned ``refresh_token`` (issuers may rotate it)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": scope}
    return token_request(token_endpoint, form, **client)


def exchange_token(
    token_endpoint: str,
    subject_token: str,
    *,
    scope: str | None = None,
    audience: str | Sequence[str] | None = None,
    **client: Unpack[ClientOptions],
) -> dict[str, Any]:
    """RFC 8693 exchange of an access token, e.g. for a narrower scope or another audience."""
    form: dict[str, Any] = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
        "scope": scope,
        "audience": [audience] if isinstance(audience, str) else audience,
    }
    return token_request(token_endpoint, form, **client)


def revoke_token(
    revocation_endpoint: str,
    token: str,
    *,
    token_type_hint: str | None = "refresh_token",
    **client: Unpack[ClientOptions],
) -> None:
    """RFC 7009 revocation: the issuer forgets ``token`` (an unknown one is no error)."""
    form = {"token": token, "token_type_hint": token_type_hint}
    _post_form(revocation_endpoint, form, **client)
