"""`remote-jobqueue login`, `logout` and `whoami` on the command line.

Specification: login takes its issuer from --issuer or Dask config (`remote-jobqueue.issuer`),
tells the user where to go on stderr and where the token went on stdout; whoami shows the
token's claims (labelled unverified), who a configured gateway takes us for (asked with its
``@whoami``) and who the schedd maps us to, each line failing on its own with its reason, and
fails as a whole only without a token; logout undoes login, and says so when there is nothing.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from click.testing import CliRunner

from remote_jobqueue import schedd
from remote_jobqueue.cli import main
from remote_jobqueue.gateway import (
    Gateway,
    JWTAuthenticator,
    load_or_create_host_key,
    public_key_text,
    serve,
)
from remote_jobqueue.tokens import WLCG_ANY_AUDIENCE, TokenValidator, write_token_file

from .facility_issuer import ServedIssuer
from .jwt_issuer import AUD, Issuer

pytestmark = pytest.mark.timeout(60)
UID = os.geteuid()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with a runtime directory and a home of their own, no token, no pool."""
    run, home = tmp_path / "run", tmp_path / "home"
    run.mkdir(mode=0o700)
    home.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("HOME", str(home))
    for name in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "CONDOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedIssuer]:
    served = ServedIssuer(tmp_path / "issuer-state", device_interval=0.1)
    yield served
    served.close()


def approve_when_asked(served: ServedIssuer, user: str = "alice") -> threading.Thread:
    """The person at the browser: reads the code off the terminal (here: the issuer's list of
    pending codes) and approves it."""

    def run() -> None:
        deadline = time.monotonic() + 20
        while not served.issuer.user_codes and time.monotonic() < deadline:
            time.sleep(0.02)
        code = next(iter(list(served.issuer.user_codes)))
        served.answer(code, user)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


# login and logout -----------------------------------------------------------------------------


def test_login_without_an_issuer_asks_for_one(home: Path) -> None:
    result = invoke("login")
    assert result.exit_code == 1
    assert "which issuer? Pass --issuer or set remote-jobqueue.issuer" in result.stderr


def test_login_whoami_logout_whoami(home: Path, served: ServedIssuer) -> None:
    approve_when_asked(served)
    with dask.config.set({"remote-jobqueue.issuer": served.url}):
        result = invoke("login")
    token_file = Path(os.environ["XDG_RUNTIME_DIR"]) / f"bt_u{UID}"
    assert result.exit_code == 0, result.output
    assert f"open {served.url}/device in a browser and enter the code" in result.stderr
    assert result.stdout == f"logged in: token in {token_file}\n"

    who = invoke("whoami")
    assert who.exit_code == 0
    lines = who.stdout.splitlines()
    assert lines[0].startswith("token (claims not verified): preferred_username=alice sub=")
    assert f"iss={served.url}, expires " in lines[0] and f"from {token_file}" in lines[0]
    assert lines[1:] == [
        "gateway: not asked: no site and no remote-jobqueue.gateway names one",
        "schedd: not asked: CONDOR_CONFIG is not set",
    ]

    out = invoke("logout")
    assert out.exit_code == 0
    assert f"revoked the refresh token at {served.url}" in out.stdout
    assert not token_file.exists()
    after = invoke("whoami")
    assert after.exit_code == 1
    assert after.stdout.startswith("token: none found (WLCG discovery)")


def test_login_asks_for_the_audiences_the_facility_published(
    home: Path, served: ServedIssuer
) -> None:
    from remote_jobqueue.tokens import token_claims_unverified

    approve_when_asked(served)
    published = ["https://gateway.example.org", "pool.example.org"]
    settings = {"remote-jobqueue.issuer": served.url, "remote-jobqueue.login-audience": published}
    with dask.config.set(settings):
        result = invoke("login")
    assert result.exit_code == 0, result.output
    token = (Path(os.environ["XDG_RUNTIME_DIR"]) / f"bt_u{UID}").read_text().strip()
    assert token_claims_unverified(token)["aud"] == published


def test_logout_with_nothing_stored_says_so(home: Path) -> None:
    result = invoke("logout")
    assert result.exit_code == 0
    assert result.stdout == "not logged in: nothing to remove\n"


# whoami: the gateway and the schedd ---------------------------------------------------------


class GatewayThread:
    """A real gateway (OIDC tokens of ``issuer``, audience AUD or any) on its own event loop,
    so a command that runs its own (`asyncio.run`) can talk to it."""

    def __init__(self, key_path: Path, issuer_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        authenticator = JWTAuthenticator(TokenValidator(issuer_url, [AUD, WLCG_ANY_AUDIENCE]))
        started = serve("127.0.0.1", 0, key_path, authenticator)
        self.gateway: Gateway = asyncio.run_coroutine_threadsafe(started, self.loop).result(10)[0]
        self.host_key = public_key_text(load_or_create_host_key(key_path))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.__aexit__(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def gateway(tmp_path: Path, issuer: Issuer) -> Iterator[GatewayThread]:
    gateway = GatewayThread(tmp_path / "gateway-host-key", issuer.url)
    with dask.config.set(
        {
            "remote-jobqueue.gateway": gateway.address,
            "remote-jobqueue.gateway-host-key": gateway.host_key,
        }
    ):
        yield gateway
    gateway.close()


def token_file(home: Path, token: str) -> None:
    write_token_file(Path(os.environ["XDG_RUNTIME_DIR"]) / f"bt_u{UID}", token)


def test_whoami_says_who_the_gateway_takes_us_for(
    home: Path, issuer: Issuer, gateway: GatewayThread
) -> None:
    token_file(home, issuer.token())
    result = invoke("whoami")
    assert result.exit_code == 0
    line = result.stdout.splitlines()[1]
    assert line.startswith(
        f"gateway {gateway.address}: alice (sub=0f3c-alice-sub iss={issuer.url})"
    )
    assert ", login until " in line


def test_whoami_asks_the_gateway_the_site_catalogue_names(
    home: Path, issuer: Issuer, tmp_path: Path
) -> None:
    """A laptop's `configure` writes only the catalogue: its gateway is the one to ask."""
    served = GatewayThread(tmp_path / "gateway-host-key", issuer.url)
    address = served.address
    site = {
        "collector": "cm.pool.test:9618",
        "schedd": "hub@pool.test",
        "requirements": 'TARGET.SiteName == "T2_X"',
        "gateway": address,
        "gateway-host-key": served.host_key,
    }
    try:
        token_file(home, issuer.token())
        with dask.config.set({"remote-jobqueue.sites": {"T2_X": site, "T2_Y": dict(site)}}):
            result = invoke("whoami")
    finally:
        served.close()
    gateway_lines = [line for line in result.stdout.splitlines() if line.startswith("gateway")]
    assert len(gateway_lines) == 1, "two sites behind one gateway: asked once"
    assert gateway_lines[0].startswith(f"gateway {address}: alice (sub=0f3c-alice-sub")


def test_whoami_asks_each_schedd_of_the_catalogue_once(
    home: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import htcondor2

    token_file(home, issuer.token())
    monkeypatch.setenv("CONDOR_CONFIG", "/dev/null")
    monkeypatch.setattr(schedd, "locate_ad", lambda collector, name: {"Name": name})
    monkeypatch.setattr(htcondor2, "ping", lambda ad, level: {"MyRemoteUserName": "alice@x"})

    def site(schedd_name: str) -> dict[str, str]:
        return {"collector": "cm:9618", "schedd": schedd_name, "requirements": "true"}

    sites = {"A": site("one@x"), "B": site("one@x"), "C": site("two@x")}
    with dask.config.set({"remote-jobqueue.sites": sites}):
        result = invoke("whoami")
    assert result.stdout.splitlines()[-2:] == [
        "schedd one@x: alice@x",
        "schedd two@x: alice@x",
    ]


def test_a_gateway_that_refuses_the_token_is_one_line_with_its_reason(
    home: Path, issuer: Issuer, gateway: GatewayThread
) -> None:
    token_file(home, issuer.token(aud="https://somewhere-else"))
    result = invoke("whoami")
    assert result.exit_code == 0  # the token is there; the gateway is the one that disagrees
    lines = result.stdout.splitlines()
    assert lines[0].startswith("token (claims not verified): preferred_username=alice")
    assert lines[1].startswith(f"gateway {gateway.address}: gateway refused the token: ")
    assert "wrong audience" in lines[1]
    assert lines[2] == "schedd: not asked: CONDOR_CONFIG is not set"


def test_an_unreachable_gateway_is_one_line_with_its_reason(home: Path, issuer: Issuer) -> None:
    token_file(home, issuer.token())
    settings = {
        "remote-jobqueue.gateway": "127.0.0.1:1",
        "remote-jobqueue.gateway-host-key": (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        ),
    }
    with dask.config.set(settings):
        result = invoke("whoami", "--timeout", "5")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].startswith("gateway 127.0.0.1:1: cannot reach gateway")


def test_an_expired_token_is_shown_as_expired(home: Path, issuer: Issuer) -> None:
    now = int(time.time())
    token_file(home, issuer.token(iat=now - 700, exp=now - 120))
    result = invoke("whoami")
    assert result.exit_code == 1
    assert "(expired 2 min ago)" in result.stdout.splitlines()[0]


def test_whoami_says_whom_the_schedd_maps_us_to(
    home: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import htcondor2

    token_file(home, issuer.token())
    monkeypatch.setenv("CONDOR_CONFIG", "/dev/null")
    monkeypatch.setattr(schedd, "locate_ad", lambda collector, name: {"Name": "hub@pool.test"})
    asked: list[tuple[object, str]] = []

    def ping(location: object, level: str) -> dict[str, str]:
        asked.append((location, level))
        return {"MyRemoteUserName": "alice@pool.test"}

    monkeypatch.setattr(htcondor2, "ping", ping)
    result = invoke("whoami")
    assert result.stdout.splitlines()[2] == "schedd hub@pool.test: alice@pool.test"
    assert asked == [({"Name": "hub@pool.test"}, "WRITE")]


def test_a_schedd_that_cannot_be_asked_is_one_line_with_its_reason(
    home: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file(home, issuer.token())
    monkeypatch.setenv("CONDOR_CONFIG", "/dev/null")

    def unreachable(collector: object, name: object) -> None:
        raise schedd.ScheddUnreachable("the collector (configured) knows no schedd")

    monkeypatch.setattr(schedd, "locate_ad", unreachable)
    result = invoke("whoami")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[2] == (
        "schedd: cannot ask: the collector (configured) knows no schedd"
    )
