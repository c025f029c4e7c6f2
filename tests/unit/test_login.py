"""`remote-jobqueue login` / `logout` and the renewal of what they store, against the facility's
real issuer served on loopback (no facility needed).

Specification: login shows where to go and what code to type, polls at the issuer's interval
(5 s more after each slow_down), and stores the access token where WLCG discovery finds it (the
runtime directory, else /tmp), 0600 and the user's, and the refresh token privately in
~/.config/remote-jobqueue (0700/0600) beside the issuer and client id; nothing goes into the
environment. Another user (another runtime directory and home) finds none of it. A token about
to expire is renewed, but only the file login wrote, and only while discovery reads it; the
cluster does so through a hook that never fails. Logout revokes the refresh token at the issuer
and deletes both files; with nothing stored it says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from remote_jobqueue import login as login_module
from remote_jobqueue import tokens
from remote_jobqueue.cluster import RemoteHTCondorCluster
from remote_jobqueue.login import LoginError, LoginStore, load_record, login, logout
from remote_jobqueue.login import refresh_if_needed as refresh

from .facility_issuer import CLIENT, ServedIssuer
from .jwt_issuer import Issuer as BareIssuer

pytestmark = pytest.mark.timeout(60)
UID = os.geteuid()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedIssuer]:
    served = ServedIssuer(tmp_path / "issuer-state")
    yield served
    served.close()


def user(tmp_path: Path, name: str, runtime_dir: bool = True) -> LoginStore:
    """A user of this host: a runtime directory and a home of their own; /tmp is shared."""
    run, home = tmp_path / name / "run", tmp_path / name / "home"
    home.mkdir(parents=True)
    if runtime_dir:
        run.mkdir(mode=0o700)
    environ = {"XDG_RUNTIME_DIR": str(run), "HOME": str(home)}
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir(exist_ok=True)
    return LoginStore.of(environ, tmp_dir=shared_tmp)


class Person:
    """The user at the browser, and the passing of time for the device that polls.

    Reads what login shows; answers at the issuer's /device page (as ``requests``) during the
    ``patience``-th wait (0: the first); stands in for ``time.sleep``, moving the issuer's clock
    instead of waiting, except during the waits listed in ``stalls`` (a device that polls too
    early)."""

    def __init__(
        self,
        served: ServedIssuer,
        name: str = "alice",
        action: str | None = "approve",
        patience: int = 1,
        stalls: tuple[int, ...] = (),
    ) -> None:
        self.served, self.name, self.action = served, name, action
        self.patience, self.stalls = patience, stalls
        self.shown: list[str] = []
        self.waits: list[float] = []

    def show(self, line: str) -> None:
        self.shown.append(line)

    @property
    def user_code(self) -> str:
        found = re.search(r"enter the code (\S+)", "\n".join(self.shown))
        assert found, f"login showed no code: {self.shown}"
        return found.group(1)

    def sleep(self, seconds: float) -> None:
        if len(self.waits) not in self.stalls:
            self.served.advance(seconds)
        if len(self.waits) == self.patience and self.action:
            assert self.served.answer(self.user_code, self.name, self.action).status_code == 200
        self.waits.append(seconds)

    def log_in(self, store: LoginStore, **kw: object) -> Path:
        return login(
            self.served.url,
            show=self.show,
            sleep=self.sleep,
            clock=self.served.clock,
            store=store,
            **kw,  # type: ignore[arg-type]
        )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def claims(path: Path) -> dict:
    return tokens.token_claims_unverified(path.read_text())


# Logging in -----------------------------------------------------------------------------------


def test_login_shows_where_to_go_and_stores_the_token_where_discovery_finds_it(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    person = Person(served, "alice")
    path = person.log_in(alice)

    assert path == Path(alice.environ["XDG_RUNTIME_DIR"]) / f"bt_u{UID}"
    assert f"open {served.url}/device in a browser and enter the code" in person.shown[0]
    assert person.waits == [5, 5]  # pending once, then approved
    assert mode(path) == 0o600 and path.stat().st_uid == UID
    found = alice.discover()
    assert found == tokens.DiscoveredToken(path.read_text(), path)
    assert claims(path)["preferred_username"] == "alice"
    assert claims(path)["scope"] == "openid profile compute.create compute.read " + (
        "compute.modify compute.cancel storage.read:/"
    )


def test_the_refresh_token_is_private_and_beside_it_only_what_renewal_needs(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    path = Person(served).log_in(alice)
    config_dir = Path(alice.environ["HOME"]) / ".config" / "remote-jobqueue"
    assert alice.config_dir == config_dir and mode(config_dir) == 0o700
    refresh_token = (config_dir / "refresh-token").read_text()
    assert mode(config_dir / "refresh-token") == 0o600
    assert served.refresh_works(refresh_token)
    record = json.loads((config_dir / "login.json").read_text())
    assert (record["issuer"], record["client_id"], record["token_file"]) == (
        served.url,
        CLIENT,
        str(path),
    )
    text = (config_dir / "login.json").read_text()
    assert refresh_token not in text and path.read_text() not in text


def test_a_config_directory_open_to_others_is_made_private(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    alice.config_dir.mkdir(parents=True, mode=0o755)
    alice.config_dir.chmod(0o755)
    Person(served).log_in(alice)
    assert mode(alice.config_dir) == 0o700


@pytest.mark.security
def test_a_config_directory_that_is_a_link_elsewhere_is_refused(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    elsewhere = tmp_path / "somewhere-shared"
    elsewhere.mkdir()
    alice.config_dir.parent.mkdir(parents=True)
    alice.config_dir.symlink_to(elsewhere)
    person = Person(served)
    with pytest.raises(LoginError, match="is not a directory of yours"):
        person.log_in(alice)
    assert not person.shown  # refused before anyone was asked to approve anything
    assert not list(elsewhere.iterdir()) and not alice.token_file.exists()


@pytest.mark.security
def test_no_token_reaches_the_environment(
    served: ServedIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = user(tmp_path, "alice")
    for name, value in alice.environ.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    path = Person(served).log_in(LoginStore.of(tmp_dir=alice.tmp_dir))
    refresh_token = alice.refresh_file.read_text()
    assert dict(os.environ) == before
    assert not [v for v in os.environ.values() if path.read_text() in v or refresh_token in v]


def test_without_a_runtime_directory_the_token_goes_to_tmp(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice", runtime_dir=False)
    path = Person(served).log_in(alice)
    assert path == alice.tmp_dir / f"bt_u{UID}"
    assert mode(path) == 0o600
    assert alice.discover() == tokens.DiscoveredToken(path.read_text(), path)


def test_asked_scope_and_audience_are_in_the_token(served: ServedIssuer, tmp_path: Path) -> None:
    path = Person(served).log_in(
        user(tmp_path, "alice"), scope="openid compute.read", audience=["https://gw.test"]
    )
    assert claims(path)["scope"] == "openid compute.read"
    assert claims(path)["aud"] == "https://gw.test"


def test_told_to_slow_down_the_client_waits_5_s_longer_from_then_on(
    served: ServedIssuer, tmp_path: Path
) -> None:
    person = Person(served, patience=3, stalls=(1,))  # the second wait ends at once
    person.log_in(user(tmp_path, "alice"))
    assert person.waits == [5, 5, 10, 10]


def test_the_issuers_interval_is_honoured(tmp_path: Path) -> None:
    served = ServedIssuer(tmp_path / "state", device_interval=2)
    try:
        person = Person(served, patience=2)
        person.log_in(user(tmp_path, "alice"))
        assert person.waits == [2, 2, 2]
    finally:
        served.close()


def test_a_denied_login_stores_nothing(served: ServedIssuer, tmp_path: Path) -> None:
    alice = user(tmp_path, "alice")
    with pytest.raises(LoginError, match="denied in the browser"):
        Person(served, action="deny").log_in(alice)
    assert not alice.token_file.exists() and not list(alice.config_dir.iterdir())


def test_an_unanswered_login_ends_when_its_code_expires(
    served: ServedIssuer, tmp_path: Path
) -> None:
    person = Person(served, action=None)
    with pytest.raises(LoginError, match="expired before it was approved"):
        person.log_in(user(tmp_path, "alice"))
    assert 595 <= sum(person.waits) <= 605


def test_an_issuer_without_the_device_flow_is_named(tmp_path: Path) -> None:
    bare = BareIssuer()
    try:
        with pytest.raises(LoginError, match=f"{bare.url} offers no device login"):
            login(bare.url, store=user(tmp_path, "alice"), show=lambda _: None)
    finally:
        bare.close()


@pytest.mark.security
def test_another_user_finds_nothing_of_the_first_users_login(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice, bob = user(tmp_path, "alice"), user(tmp_path, "bob")
    path = Person(served, "alice").log_in(alice)
    assert bob.discover() is None
    assert refresh(store=bob) is None
    assert logout(store=bob, show=lambda _: None) is False
    assert path.exists() and alice.refresh_file.exists()  # alice's login is untouched


def test_a_second_user_logs_in_with_their_own_identity(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice, bob = user(tmp_path, "alice"), user(tmp_path, "bob")
    Person(served, "alice").log_in(alice)
    Person(served, "bob").log_in(bob)
    assert claims(alice.token_file)["preferred_username"] == "alice"
    assert claims(bob.token_file)["preferred_username"] == "bob"


# Renewing -------------------------------------------------------------------------------------


def almost_expired_login(served: ServedIssuer, store: LoginStore) -> tuple[str, str]:
    """Log in with a token that has a minute left; its access and refresh tokens."""
    served.issuer.access_lifetime = 60
    path = Person(served).log_in(store)
    served.issuer.access_lifetime = 3600
    return path.read_text(), store.refresh_file.read_text()


def test_refresh_if_needed_renews_an_almost_expired_token_and_rotates_the_refresh_token(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    old_access, old_refresh = almost_expired_login(served, alice)
    assert refresh(120, store=alice) == alice.token_file
    new_access = alice.token_file.read_text()
    assert new_access != old_access
    assert tokens.token_claims_unverified(new_access)["exp"] > claims_exp(old_access) + 3000
    assert mode(alice.token_file) == 0o600 and mode(alice.refresh_file) == 0o600
    assert alice.refresh_file.read_text() != old_refresh
    assert not served.refresh_works(old_refresh)  # the issuer rotated it
    assert refresh(120, store=alice) == alice.token_file  # now good for long: left alone
    assert alice.token_file.read_text() == new_access


def claims_exp(token: str) -> int:
    return tokens.token_claims_unverified(token)["exp"]


def test_refresh_if_needed_leaves_a_good_token_alone(served: ServedIssuer, tmp_path: Path) -> None:
    alice = user(tmp_path, "alice")
    path = Person(served).log_in(alice)
    access, refresh_token = path.read_text(), alice.refresh_file.read_text()
    assert refresh(120, store=alice) == path
    assert path.read_text() == access and alice.refresh_file.read_text() == refresh_token


def test_a_token_file_another_tool_rewrote_is_not_renewed(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    almost_expired_login(served, alice)
    tokens.write_token_file(alice.token_file, "a.token-of-htgettoken.x")
    assert refresh(120, store=alice) is None
    assert alice.token_file.read_text() == "a.token-of-htgettoken.x"


def test_a_token_discovery_finds_first_elsewhere_is_not_renewed(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    access, _ = almost_expired_login(served, alice)
    chosen = tmp_path / "chosen-token"
    tokens.write_token_file(chosen, "the.users.own")
    elsewhere = LoginStore.of(
        {**alice.environ, "BEARER_TOKEN_FILE": str(chosen)}, tmp_dir=alice.tmp_dir
    )
    assert refresh(120, store=elsewhere) is None
    assert alice.token_file.read_text() == access


def test_a_token_a_new_session_lost_is_written_again(served: ServedIssuer, tmp_path: Path) -> None:
    alice = user(tmp_path, "alice")
    path = Person(served).log_in(alice)
    path.unlink()  # the runtime directory is emptied at the end of a session
    assert refresh(120, store=alice) == path
    assert claims(path)["preferred_username"] == "alice"


@pytest.mark.parametrize(("left", "renewed"), [(3600, False), (30, True)])
def test_a_token_that_is_no_jwt_is_renewed_by_the_lifetime_the_issuer_gave(
    tmp_path: Path, left: float, renewed: bool
) -> None:
    alice = user(tmp_path, "alice")
    alice.config_dir.mkdir(parents=True, mode=0o700)
    tokens.write_token_file(alice.token_file, "opaque-access-token")
    tokens.write_private_file(alice.refresh_file, "opaque-refresh-token")
    record = {
        "issuer": "http://127.0.0.1:1",  # nobody: asking it fails
        "client_id": CLIENT,
        "token_file": str(alice.token_file),
        "token_sha256": hashlib.sha256(b"opaque-access-token").hexdigest(),
        "expires_at": time.time() + left,
    }
    tokens.write_private_file(alice.record_file, json.dumps(record))
    if renewed:
        with pytest.raises(tokens.IssuerUnavailable):
            refresh(120, store=alice, timeout=2)
    else:
        assert refresh(120, store=alice) == alice.token_file


def test_with_no_login_stored_refresh_does_nothing(tmp_path: Path) -> None:
    assert refresh(120, store=user(tmp_path, "alice")) is None


def test_a_revoked_login_cannot_be_renewed_and_says_log_in_again(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    _, refresh_token = almost_expired_login(served, alice)
    tokens.revoke_token(f"{served.url}/revoke", refresh_token, client_id=CLIENT)
    with pytest.raises(LoginError, match="expired or was revoked: log in again"):
        refresh(120, store=alice)


# The cluster's hook ---------------------------------------------------------------------------


@pytest.fixture
def as_alice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoginStore:
    """Alice's environment in os.environ, as the cluster reads it."""
    alice = user(tmp_path, "alice")
    for name in ("BEARER_TOKEN", "BEARER_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in alice.environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(login_module, "_quiet_until", 0.0)
    return alice


def cluster_token() -> str:
    """What a cluster without a token-file setting hands the gateway and the bundle."""
    return RemoteHTCondorCluster._bearer_token(SimpleNamespace(token_file=None))  # type: ignore[arg-type]


def test_the_cluster_renews_a_login_token_before_it_uses_it(
    served: ServedIssuer, as_alice: LoginStore
) -> None:
    old_access, _ = almost_expired_login(served, as_alice)
    token = cluster_token()
    assert token != old_access and token == as_alice.token_file.read_text()
    assert claims_exp(token) > claims_exp(old_access) + 3000


def test_the_cluster_uses_the_token_as_it_is_when_renewal_fails(
    served: ServedIssuer, as_alice: LoginStore, caplog: pytest.LogCaptureFixture
) -> None:
    old_access, refresh_token = almost_expired_login(served, as_alice)
    served.close()  # the issuer is down
    assert cluster_token() == old_access
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot renew the token of remote-jobqueue login" in w for w in warnings)
    for text in warnings:
        assert old_access not in text and refresh_token not in text
    caplog.clear()
    assert cluster_token() == old_access  # and it does not ask again at once
    assert not [r for r in caplog.records if "cannot renew" in r.getMessage()]


# Logging out ----------------------------------------------------------------------------------


def test_logout_revokes_the_refresh_token_and_deletes_both_files(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    path = Person(served).log_in(alice)
    refresh_token = alice.refresh_file.read_text()
    shown: list[str] = []
    assert logout(store=alice, show=shown.append) is True
    assert not path.exists() and not alice.refresh_file.exists()
    assert load_record(alice) is None
    assert f"revoked the refresh token at {served.url}" in shown
    assert not served.refresh_works(refresh_token)
    assert alice.discover() is None


def test_logout_with_nothing_stored_says_so_and_succeeds(tmp_path: Path) -> None:
    shown: list[str] = []
    assert logout(store=user(tmp_path, "alice"), show=shown.append) is False
    assert shown == ["not logged in: nothing to remove"]


def test_logout_leaves_a_token_file_another_tool_rewrote(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    path = Person(served).log_in(alice)
    tokens.write_token_file(path, "a.token-of-htgettoken.x")
    shown: list[str] = []
    logout(store=alice, show=shown.append)
    assert path.read_text() == "a.token-of-htgettoken.x"
    assert f"left {path}: it holds a token login did not write" in shown
    assert not alice.refresh_file.exists()


def test_logout_with_the_issuer_down_still_deletes_and_says_it_could_not_revoke(
    served: ServedIssuer, tmp_path: Path
) -> None:
    alice = user(tmp_path, "alice")
    path = Person(served).log_in(alice)
    served.close()
    shown: list[str] = []
    assert logout(store=alice, show=shown.append) is True
    assert any(line.startswith("could not revoke the refresh token") for line in shown)
    assert not path.exists() and not alice.refresh_file.exists()
