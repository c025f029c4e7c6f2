"""A detached run keeps its bearer token fresh with a refresh token of its own.

Specification:
- at `run`, the client exchanges its access token at the token's own issuer (RFC 8693) for a
  refresh token of the same user, audience and scope (plus ``offline_access``);
- an issuer that cannot or will not gives a `RunWithoutRenewal` warning, and the run starts
  without renewal;
- the bundle's renewer refreshes a quarter of a short token's lifetime (five minutes of a long
  one) before it expires, keeps a rotated refresh token 0600, and hands the new access token to
  the agent (which keeps it only if the gateway takes it);
- a refresh token the issuer refuses stops the renewer with an error in the bundle's log;
- when the cluster ends the refresh token is revoked at the issuer and deleted; so is it when
  the start fails, or is given up while the exchange is still under way;
- the refresh token travels as an input file of its own, never in the bundle's spec.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from pathlib import Path

import pytest

from remote_jobqueue import run_token, tokens
from remote_jobqueue.bundle.token_renewer import TokenRenewer
from remote_jobqueue.spec import RUN_REFRESH_TOKEN, BundleSpec, WorkerSpec

from .facility_issuer import CLIENT, ServedIssuer

pytestmark = pytest.mark.timeout(30)

AUDIENCES = ["rjq-gateway", "htcondor://pool"]


@pytest.fixture
def served(tmp_path: Path):
    served = ServedIssuer(tmp_path / "issuer-state")
    yield served
    served.close()


def access_token(served: ServedIssuer, expires_in: int = 60, user: str = "alice") -> str:
    form = {
        "grant_type": "password",
        "username": user,
        "password": served.password(user),
        "scope": "openid compute.create compute.read",
        "audience": AUDIENCES,
        "expires_in": str(expires_in),
    }
    return tokens.token_request(f"{served.url}/token", form, client_id=CLIENT)["access_token"]


def test_the_exchange_gives_a_refresh_token_of_the_same_user_scope_and_audience(served):
    token = access_token(served)
    renewal, refresh = run_token.exchange_for_run(token)
    assert renewal == {"issuer": served.url, "client_id": CLIENT}

    renewed = tokens.refresh_access_token(f"{served.url}/token", refresh, client_id=CLIENT)
    claims = tokens.token_claims_unverified(renewed["access_token"])
    original = tokens.token_claims_unverified(token)
    assert claims["sub"] == original["sub"] and claims["preferred_username"] == "alice"
    assert sorted(claims["aud"]) == sorted(AUDIENCES)
    assert set(claims["scope"].split()) == {*original["scope"].split(), "offline_access"}


def test_an_issuer_that_cannot_exchange_warns_and_the_run_starts_without_renewal(served):
    token = access_token(served)
    served.close()  # the issuer is gone
    with pytest.warns(run_token.RunWithoutRenewal, match="ends when the token expires at"):
        assert run_token.prepare(token) == (None, None)


def test_an_expired_token_is_not_exchanged_and_the_warning_says_why(served):
    token = access_token(served, expires_in=1)
    time.sleep(2.1)
    with pytest.warns(run_token.RunWithoutRenewal, match="token expired"):
        assert run_token.prepare(token) == (None, None)


def test_revoke_ends_the_refresh_token(served):
    renewal, refresh = run_token.exchange_for_run(access_token(served))
    assert run_token.revoke(renewal, refresh)
    assert not served.refresh_works(refresh)


async def test_a_failed_start_revokes_the_runs_refresh_token(served):
    from types import SimpleNamespace

    from remote_jobqueue.cluster import RemoteHTCondorCluster

    renewal, refresh = run_token.exchange_for_run(access_token(served))
    cluster = SimpleNamespace(_renewal=renewal, _run_refresh=refresh)
    await RemoteHTCondorCluster._revoke_run_refresh(cluster)
    assert cluster._run_refresh is None
    assert not served.refresh_works(refresh)


def _join_revocations() -> None:
    import threading

    for thread in threading.enumerate():
        if thread.name == "revoke-run-token":
            thread.join(10)


@pytest.mark.parametrize("abandoned", ["before it ends", "after it ended"])
def test_an_exchange_given_up_leaves_no_live_refresh_token(served, abandoned, monkeypatch):
    got: list[str] = []
    exchange_for_run = run_token.exchange_for_run

    def recording(token, **kwargs):
        renewal, refresh = exchange_for_run(token, **kwargs)
        got.append(refresh)
        return renewal, refresh

    monkeypatch.setattr(run_token, "exchange_for_run", recording)
    exchange = run_token.Exchange(access_token(served))
    if abandoned == "before it ends":
        exchange.abandon()
        assert exchange.run() == (None, None)
    else:
        assert exchange.run()[1] == got[0]
        exchange.abandon()
    _join_revocations()
    assert got and not served.refresh_works(got[0])


def _renewer(tmp_path: Path, served: ServedIssuer, token: str, taken: list[str], answer=True):
    renewal, refresh = run_token.exchange_for_run(token)
    refresh_file, token_file = tmp_path / RUN_REFRESH_TOKEN, tmp_path / "bearer-token"
    tokens.write_private_file(refresh_file, refresh)
    tokens.write_token_file(token_file, token)

    async def renew_token(new: str) -> bool:
        taken.append(new)
        return answer

    return TokenRenewer(renewal, refresh_file, token_file, renew_token)


def test_renewal_is_due_a_quarter_of_a_short_lifetime_and_five_minutes_of_a_long_one(
    served, tmp_path
):
    now = time.time()
    short = _renewer(tmp_path, served, access_token(served, expires_in=60), [])
    assert 40 <= short.due_in(now) <= 46
    long = _renewer(tmp_path, served, access_token(served, expires_in=3600), [])
    assert 3290 <= long.due_in(now) <= 3301
    assert long.due_in(now + 3500) == 0


def test_renew_once_hands_on_a_longer_token_and_keeps_the_rotated_refresh_token_private(
    served, tmp_path
):
    taken: list[str] = []
    token = access_token(served, expires_in=30)
    renewer = _renewer(tmp_path, served, token, taken)
    before = renewer.refresh_file.read_text()

    assert asyncio.run(renewer.renew_once())
    (new,) = taken
    assert tokens.token_claims_unverified(new)["exp"] > tokens.token_claims_unverified(token)["exp"]
    assert tokens.token_claims_unverified(new)["preferred_username"] == "alice"
    rotated = renewer.refresh_file.read_text()
    assert rotated != before and not served.refresh_works(before)
    assert stat.S_IMODE(renewer.refresh_file.stat().st_mode) == 0o600


def test_a_refused_refresh_token_stops_the_renewer_with_an_error(served, tmp_path, caplog):
    taken: list[str] = []
    renewer = _renewer(tmp_path, served, access_token(served, expires_in=4), taken)
    run_token.revoke(renewer.renewal, renewer.refresh_file.read_text())

    async def main() -> None:
        renewer.start()
        await asyncio.wait_for(renewer._task, 10)

    with caplog.at_level(logging.ERROR, "remote_jobqueue.bundle"):
        asyncio.run(main())
    assert not taken
    assert "the run's refresh token was refused" in caplog.text
    assert "invalid_grant" in caplog.text


def test_close_revokes_and_deletes_the_refresh_token(served, tmp_path):
    renewer = _renewer(tmp_path, served, access_token(served, expires_in=3600), [])
    refresh = renewer.refresh_file.read_text()

    async def main() -> None:
        renewer.start()
        await renewer.close()

    asyncio.run(main())
    assert not renewer.refresh_file.exists()
    assert not served.refresh_works(refresh)


def test_close_during_a_renewal_revokes_the_rotated_refresh_token(served, tmp_path, monkeypatch):
    """The issuer has rotated the refresh token, but its answer is still on the way."""
    import threading

    from remote_jobqueue.bundle import token_renewer

    rotated: list[str] = []
    answered = threading.Event()
    refresh = token_renewer.tokens.refresh_access_token

    def slow_answer(*args, **kwargs):
        response = refresh(*args, **kwargs)
        rotated.append(response["refresh_token"])
        answered.set()
        time.sleep(1)
        return response

    monkeypatch.setattr(token_renewer.tokens, "refresh_access_token", slow_answer)
    renewer = _renewer(tmp_path, served, access_token(served, expires_in=4), [])

    async def main() -> None:
        renewer.start()
        await asyncio.to_thread(answered.wait, 10)
        await renewer.close()

    asyncio.run(main())
    assert rotated and not served.refresh_works(rotated[0])
    assert not renewer.refresh_file.exists()


def test_the_refresh_token_is_an_input_file_of_its_own_never_in_the_spec():
    base = BundleSpec(cluster_id="rjq-x", site="T2_A", worker=WorkerSpec(tls=True))
    run = BundleSpec(
        cluster_id="rjq-x",
        site="T2_A",
        worker=WorkerSpec(tls=True),
        driver={"script": "a.py", "args": []},
        renewal={"issuer": "https://issuer.example", "client_id": CLIENT},
    )
    assert RUN_REFRESH_TOKEN not in base.submit_description()["transfer_input_files"]
    assert RUN_REFRESH_TOKEN in run.submit_description()["transfer_input_files"].split(",")
    assert set(json.loads(run.to_json())["renewal"]) == {"issuer", "client_id"}
    assert BundleSpec.from_json(run.to_json()) == run
