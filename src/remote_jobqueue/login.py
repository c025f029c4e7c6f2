"""`remote-jobqueue login` from a laptop: the OAuth device authorization grant (RFC 8628).

A terminal has no browser to be sent back to, so `login` shows a URL and a short code for the
user to open on any device with a browser, polls the issuer (any OIDC issuer, found by its
discovery document) until they have answered, and stores the tokens where the rest of the
project finds them:

* the access token at a WLCG discovery path, ``$XDG_RUNTIME_DIR/bt_u<uid>`` (``/tmp/bt_u<uid>``
  without a runtime directory), so that the cluster, HTCondor and XRootD all use it;
* the refresh token in ``~/.config/remote-jobqueue/refresh-token`` (directory 0700, file 0600),
  beside ``login.json``: the issuer, the client id and which token file login wrote, with its
  hash (no secret), so that `refresh_if_needed` renews that file, and only while discovery
  still reads the very token login wrote there.

Nothing goes into the environment: a variable is inherited by every child process and can be
read in ``/proc/<pid>/environ``. `logout` revokes the refresh token and deletes both files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tokens

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT = tokens.DEVICE_CODE_GRANT
DEFAULT_CLIENT_ID = "remote-jobqueue"
#: RFC 8628 §3.2/§3.5: the interval when the issuer names none, and what slow_down adds to it.
DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0
#: Longest wait between polls when the issuer cannot be reached (§3.5: back off).
MAX_INTERVAL = 60.0


class LoginError(tokens.TokenError):
    """Logging in, renewing or logging out failed for a reason the user can act on."""


# Where a login lives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginStore:
    """The files of one user's login, worked out from their environment as discovery does, so a
    test can be two users at once (two runtime directories, two homes)."""

    token_file: Path
    config_dir: Path
    uid: int
    environ: Mapping[str, str] = field(repr=False, compare=False)
    #: Where discovery looks last (``/tmp``).
    tmp_dir: Path = Path("/tmp")

    @classmethod
    def of(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        uid: int | None = None,
        tmp_dir: str | os.PathLike[str] = "/tmp",
    ) -> LoginStore:
        environ = os.environ if environ is None else environ
        uid = os.geteuid() if uid is None else uid
        runtime = environ.get("XDG_RUNTIME_DIR", "")
        base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tmp_dir)
        home = Path(environ.get("HOME") or Path.home())
        config_dir = home / ".config" / "remote-jobqueue"
        return cls(base / f"bt_u{uid}", config_dir, uid, environ, Path(tmp_dir))

    @property
    def refresh_file(self) -> Path:
        return self.config_dir / "refresh-token"

    @property
    def record_file(self) -> Path:
        return self.config_dir / "login.json"

    def discover(self) -> tokens.DiscoveredToken | None:
        """The token every tool of this user would use now, and where it was found."""
        return tokens.find_bearer_token(self.environ, uid=self.uid, tmp_dir=self.tmp_dir)


@dataclass(frozen=True)
class LoginRecord:
    """What `login` stored beside the refresh token: enough to renew or revoke, no secret."""

    issuer: str
    client_id: str
    token_file: str
    #: SHA-256 of the access token login last wrote: a file another tool rewrote is not ours.
    token_sha256: str
    scope: str | None = None
    audience: list[str] = field(default_factory=list)
    #: When the access token expires, by the token response (for tokens that are no JWT).
    expires_at: float | None = None


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _remaining(token: str, record: LoginRecord) -> float:
    """Seconds the token is good for, by its own ``exp`` (unverified: only to decide a
    renewal), else by the token response; unknown: as good as forever (no renewal storms)."""
    try:
        exp = tokens.token_claims_unverified(token).get("exp")
    except tokens.TokenError:
        exp = None
    if not isinstance(exp, int | float):
        exp = record.expires_at
    return float("inf") if exp is None else float(exp) - time.time()


def _private_dir(path: Path, uid: int) -> Path:
    """``path`` as a directory of ``uid``'s alone (0700), made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise LoginError(f"{path} is not a directory of yours: no token is stored there")
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)
    return path


@contextlib.contextmanager
def _locked(store: LoginStore) -> Iterator[None]:
    """One renewal at a time, across processes: with rotating refresh tokens, the second of
    two concurrent renewals would present a token the first one used up."""
    _private_dir(store.config_dir, store.uid)
    fd = os.open(store.config_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_record(store: LoginStore) -> LoginRecord | None:
    """The stored login, or None if there is none (or it cannot be read)."""
    try:
        data = json.loads(store.record_file.read_text())
        return LoginRecord(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        log.warning("ignoring %s: %s", store.record_file, err)
        return None


def _stored_refresh_token(store: LoginStore) -> str | None:
    if not store.refresh_file.exists():
        return None
    return tokens.read_token_file(store.refresh_file, uid=store.uid)


def _save(
    store: LoginStore,
    response: Mapping[str, Any],
    target: Path,
    record: LoginRecord,
    previous_refresh: str | None = None,
) -> Path:
    """Store a token response: the access token at ``target`` first (if that fails, nothing
    changed), then the refresh token (the new one, else the one it was renewed with) and the
    record."""
    access = response.get("access_token")
    if not isinstance(access, str) or not access.strip():
        raise LoginError("the issuer answered no access token")
    _private_dir(store.config_dir, store.uid)
    try:
        tokens.write_token_file(target, access)
    except PermissionError as err:
        raise LoginError(
            f"cannot write the token to {target} ({err.strerror}): is it another user's? "
            "Remove it, or log in where XDG_RUNTIME_DIR names your own runtime directory"
        ) from None
    refresh = response.get("refresh_token") or previous_refresh
    if refresh:
        tokens.write_private_file(store.refresh_file, refresh)
    else:
        store.refresh_file.unlink(missing_ok=True)  # one of an earlier login would not match
    lifetime = response.get("expires_in")
    record = dataclasses.replace(
        record,
        token_file=str(target),
        token_sha256=_sha256(access),
        expires_at=time.time() + lifetime if isinstance(lifetime, int | float) else None,
    )
    text = json.dumps(dataclasses.asdict(record), indent=2) + "\n"
    tokens.write_private_file(store.record_file, text)
    return target


# Logging in ----------------------------------------------------------------------------------


def login(
    issuer_url: str,
    client_id: str = DEFAULT_CLIENT_ID,
    scope: str | None = None,
    audience: str | Sequence[str] = (),
    show: Callable[[str], Any] = print,
    *,
    store: LoginStore | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    timeout: float = 10.0,
) -> Path:
    """Log in with the device flow; returns the file the access token was stored in.

    ``scope`` (space-separated) and ``audience`` default to the issuer's defaults. ``show``
    tells the user where to go and what to type; ``sleep`` and ``clock`` pace the polling
    (tests pass their own).
    """
    store = LoginStore.of() if store is None else store
    _private_dir(store.config_dir, store.uid)  # before the user approves anything
    audiences = [audience] if isinstance(audience, str) else list(audience)
    doc = tokens.fetch_discovery(issuer_url, timeout=timeout)
    endpoint = doc.get("device_authorization_endpoint")
    if not endpoint:
        raise LoginError(
            f"{issuer_url} offers no device login (its discovery document names no "
            "device_authorization_endpoint)"
        )
    form = {"scope": scope, "audience": audiences or None}
    start = tokens.token_request(endpoint, form, client_id=client_id, timeout=timeout)
    try:
        device_code, user_code = start["device_code"], start["user_code"]
        verification_uri = start["verification_uri"]
    except KeyError as err:
        raise LoginError(f"{endpoint} answered no {err.args[0]}") from None
    show(f"To log in, open {verification_uri} in a browser and enter the code {user_code}")
    if complete := start.get("verification_uri_complete"):
        show(f"(or open {complete})")
    response = _poll(
        doc["token_endpoint"],
        device_code,
        client_id,
        interval=float(start.get("interval", DEFAULT_INTERVAL)),
        expires_in=float(start.get("expires_in", 600)),
        sleep=sleep,
        clock=clock,
        timeout=timeout,
    )
    record = LoginRecord(issuer_url, client_id, "", "", scope, audiences)
    path = _save(store, response, store.token_file, record)
    if not response.get("refresh_token"):
        show("note: the issuer gave no refresh token, so the login ends with this token")
    found = store.discover()
    if found is not None and found.path != path:
        where = found.path or "BEARER_TOKEN"
        show(f"note: discovery finds {where} first, so tools use that token, not this one")
    return path


def _poll(
    token_endpoint: str,
    device_code: str,
    client_id: str,
    *,
    interval: float,
    expires_in: float,
    sleep: Callable[[float], Any],
    clock: Callable[[], float],
    timeout: float,
) -> dict[str, Any]:
    """RFC 8628 §3.4-3.5: poll every ``interval`` s (5 s more after each slow_down) until the
    user answered or the code expired."""
    deadline = clock() + expires_in
    form = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code}
    while clock() < deadline:
        sleep(interval)
        try:
            return tokens.token_request(token_endpoint, form, client_id=client_id, timeout=timeout)
        except tokens.TokenRequestError as err:
            if err.error == "authorization_pending":
                continue
            if err.error == "slow_down":
                interval += SLOW_DOWN_STEP
                continue
            if err.error == "access_denied":
                raise LoginError("the login was denied in the browser") from None
            if err.error == "expired_token":
                break
            raise LoginError(f"the issuer refused the login: {err}") from None
        except tokens.IssuerUnavailable as err:
            interval = min(2 * max(interval, 1.0), MAX_INTERVAL)
            log.warning("%s; asking again in %.0f s", err, interval)
    raise LoginError("the code expired before it was approved: log in again")


# Renewing ------------------------------------------------------------------------------------


def refresh_if_needed(
    min_valid: float = 120, *, store: LoginStore | None = None, timeout: float = 10.0
) -> Path | None:
    """Renew login's access token if it is good for less than ``min_valid`` more seconds.

    Only the file login wrote is renewed, and only while discovery reads the very token login
    wrote there (so a ``BEARER_TOKEN_FILE`` of the user's, or a token another tool wrote, is
    left alone); if discovery finds no token at all (a new session's runtime directory), it is
    written again. Returns login's token file when discovery uses it, else None.
    """
    store = LoginStore.of() if store is None else store
    if not store.record_file.exists():
        return None  # the usual case, for people who never ran login: one stat
    with _locked(store):
        record = load_record(store)
        if record is None:
            return None
        written = Path(record.token_file)
        found = store.discover()
        if found is not None:
            if found.path != written or _sha256(found.token) != record.token_sha256:
                return None  # discovery reads a token login did not write: not ours
            if _remaining(found.token, record) >= min_valid:
                return written
        target = written if found is not None else store.token_file
        refresh = _stored_refresh_token(store)
        if refresh is None:
            return written if found is not None else None
        endpoint = tokens.fetch_discovery(record.issuer, timeout=timeout)["token_endpoint"]
        try:
            response = tokens.refresh_access_token(
                endpoint, refresh, client_id=record.client_id, timeout=timeout
            )
        except tokens.TokenRequestError as err:
            if err.error == "invalid_grant":
                raise LoginError(
                    f"the login at {record.issuer} has expired or was revoked: log in again"
                ) from None
            raise
        log.info("renewed the token of remote-jobqueue login in %s", target)
        return _save(store, response, target, record, previous_refresh=refresh)


#: When `refresh_quietly` may try again after a failure (time.monotonic()).
_quiet_until = 0.0


def refresh_quietly(min_valid: float = 120, timeout: float = 5.0) -> None:
    """`refresh_if_needed` for code that is about to read the token (the cluster): never
    raises, since the token as it is may still do; a failure is logged, and not retried for a
    minute, so that a heartbeat does not hammer a broken issuer."""
    global _quiet_until
    if time.monotonic() < _quiet_until:
        return
    try:
        refresh_if_needed(min_valid, timeout=timeout)
    except Exception as err:
        _quiet_until = time.monotonic() + 60.0
        log.warning("cannot renew the token of remote-jobqueue login: %s", err)


# Logging out ---------------------------------------------------------------------------------


def logout(
    *,
    store: LoginStore | None = None,
    show: Callable[[str], Any] = print,
    timeout: float = 10.0,
) -> bool:
    """Revoke the refresh token at its issuer (if it can revoke) and delete what login stored;
    False if nothing was stored. A token file another tool has rewritten since is left."""
    store = LoginStore.of() if store is None else store
    record = load_record(store)
    refresh = _stored_refresh_token(store)
    if record is None and not store.refresh_file.exists():
        show("not logged in: nothing to remove")
        return False
    if record is not None and refresh is not None:
        _revoke(record, refresh, show, timeout)
    removed: list[Path] = []
    if record is not None:
        written = Path(record.token_file)
        current = tokens.read_token_file(written, uid=store.uid) if written.exists() else None
        if current is not None and _sha256(current) == record.token_sha256:
            written.unlink()
            removed.append(written)
        elif current is not None:
            show(f"left {written}: it holds a token login did not write")
    for path in (store.refresh_file, store.record_file):
        if path.exists():
            path.unlink()
            removed.append(path)
    show("logged out; removed " + (", ".join(map(str, removed)) or "nothing"))
    return True


def _revoke(record: LoginRecord, refresh: str, show: Callable[[str], Any], timeout: float) -> None:
    try:
        endpoint = tokens.fetch_discovery(record.issuer, timeout=timeout).get("revocation_endpoint")
        if not endpoint:
            show(f"{record.issuer} cannot revoke tokens: the refresh token lives until it expires")
            return
        tokens.revoke_token(endpoint, refresh, client_id=record.client_id, timeout=timeout)
    except tokens.TokenError as err:
        show(f"could not revoke the refresh token at {record.issuer} ({err}); deleting it anyway")
        return
    show(f"revoked the refresh token at {record.issuer}")
