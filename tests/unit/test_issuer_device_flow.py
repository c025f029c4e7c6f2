"""The facility issuer's device authorization grant (RFC 8628) and revocation (RFC 7009).

Specification: a device asks for codes; a person enters the user code at ``/device`` with their
name and password and approves (or denies); meanwhile the device polls the token endpoint and
hears ``authorization_pending``, ``slow_down`` if it polls faster than the interval (which then
grows by 5 s for good), ``access_denied``, ``expired_token``, or gets the tokens the password
grant would give, once. Wrong user codes and wrong passwords approve nothing; the page echoes
nothing unescaped; no log line holds a code or a token. A revoked refresh token is dead.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from remote_jobqueue import tokens
from rjq_facility import issuer

from .facility_issuer import CLIENT, ServedIssuer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedIssuer]:
    served = ServedIssuer(tmp_path / "state")
    yield served
    served.close()


def start(served: ServedIssuer, **form: str) -> tuple[str, str]:
    """A device's authorization request: its device code and the user code to show."""
    answer = served.device_authorization(**form)
    return answer["device_code"], answer["user_code"]


# Discovery and the authorization request ----------------------------------------------------


def test_discovery_names_the_device_and_revocation_endpoints(served: ServedIssuer) -> None:
    doc = tokens.fetch_discovery(served.url)
    assert doc["device_authorization_endpoint"] == f"{served.url}/device_authorization"
    assert doc["revocation_endpoint"] == f"{served.url}/revoke"
    assert issuer.DEVICE_CODE_GRANT in doc["grant_types_supported"]


def test_the_device_gets_a_short_user_code_and_where_to_enter_it(served: ServedIssuer) -> None:
    answer = served.device_authorization()
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", answer["user_code"])
    assert answer["verification_uri"] == f"{served.url}/device"
    code = answer["user_code"]
    assert answer["verification_uri_complete"] == f"{served.url}/device?user_code={code}"
    assert (answer["expires_in"], answer["interval"]) == (600, 5)
    assert len(answer["device_code"]) >= 32 and code not in answer["device_code"]


def test_the_interval_and_lifetime_can_be_asked_for_so_tests_poll_fast(
    served: ServedIssuer,
) -> None:
    answer = served.device_authorization(interval="0.2", expires_in="30")
    assert (answer["interval"], answer["expires_in"]) == (0.2, 30)


def test_the_issuer_has_a_default_interval_of_its_own(tmp_path: Path) -> None:
    served = ServedIssuer(tmp_path / "state", device_interval=1)
    try:
        assert served.device_authorization()["interval"] == 1
    finally:
        served.close()


@pytest.mark.security
def test_only_the_public_client_may_use_the_device_flow(served: ServedIssuer) -> None:
    secret = served.issuer.clients[issuer.HUB_CLIENT]["secret"]
    with pytest.raises(tokens.TokenRequestError) as err:
        tokens.token_request(
            f"{served.url}/device_authorization",
            {},
            client_id=issuer.HUB_CLIENT,
            client_secret=secret,
        )
    assert err.value.error == "unauthorized_client"


def test_a_public_client_made_before_the_device_grant_gets_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    issuer.ensure_state(state, ["alice"], "http://issuer.test")
    clients_path = issuer.issuer_dir(state) / "clients.json"
    clients = json.loads(clients_path.read_text())
    clients[CLIENT]["grant_types"] = issuer.ALL_GRANTS  # as older facilities wrote it
    clients_path.write_text(json.dumps(clients))
    issuer.ensure_state(state, ["alice"], "http://issuer.test")
    after = json.loads(clients_path.read_text())
    assert after[CLIENT]["grant_types"] == issuer.PUBLIC_GRANTS
    assert after[issuer.HUB_CLIENT] == clients[issuer.HUB_CLIENT]  # secret and all


# The flow -------------------------------------------------------------------------------------


def test_pending_then_approved_at_the_device_page_then_tokens(served: ServedIssuer) -> None:
    device_code, user_code = start(served, audience="https://gateway.test", scope="openid a b")
    assert served.error_of_poll(device_code) == "authorization_pending"

    page = requests.get(f"{served.url}/device", params={"user_code": user_code}, timeout=10)
    assert page.status_code == 200 and f'value="{user_code}"' in page.text
    approved = served.answer(user_code, "alice")
    assert approved.status_code == 200 and "Device approved" in approved.text

    served.advance(5)
    response = served.poll(device_code)
    claims = tokens.TokenValidator(served.url, "https://gateway.test").validate(
        response["access_token"]
    )
    assert claims["preferred_username"] == "alice"
    assert claims["scope"] == "openid a b" == response["scope"]
    assert claims["client_id"] == CLIENT
    assert served.refresh_works(response["refresh_token"])


def test_the_token_is_what_the_password_grant_makes_by_default(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    served.answer(user_code, "bob")
    claims = tokens.token_claims_unverified(served.poll(device_code)["access_token"])
    assert claims["scope"] == issuer.DEFAULT_SCOPE
    assert claims["aud"] == tokens.WLCG_ANY_AUDIENCE
    assert claims["preferred_username"] == "bob"
    assert claims["wlcg.groups"] == ["/facility", "/facility/bob"]


def test_polling_faster_than_the_interval_is_told_to_slow_down_for_good(
    served: ServedIssuer,
) -> None:
    device_code, _ = start(served)  # interval 5 s
    assert served.error_of_poll(device_code) == "authorization_pending"
    served.advance(5)
    assert served.error_of_poll(device_code) == "authorization_pending"  # at the interval: fine
    assert served.error_of_poll(device_code) == "slow_down"  # at once: too fast; now 10 s
    served.advance(6)
    assert served.error_of_poll(device_code) == "slow_down"  # 6 < 10; now 15 s
    served.advance(15)
    assert served.error_of_poll(device_code) == "authorization_pending"


def test_denied_at_the_device_page(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    denied = served.answer(user_code, "alice", action="deny")
    assert denied.status_code == 200 and "Device denied" in denied.text
    assert served.error_of_poll(device_code) == "access_denied"
    served.advance(5)
    assert served.error_of_poll(device_code) == "invalid_grant"  # and it is gone


def test_an_expired_code_can_be_neither_approved_nor_used(served: ServedIssuer) -> None:
    device_code, user_code = start(served, expires_in="60")
    served.advance(61)
    assert served.answer(user_code).status_code == 400
    assert served.error_of_poll(device_code) == "expired_token"
    served.advance(5)
    assert served.error_of_poll(device_code) == "invalid_grant"


@pytest.mark.security
def test_a_device_code_gets_tokens_once(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    served.answer(user_code)
    served.poll(device_code)
    served.advance(5)
    assert served.error_of_poll(device_code) == "invalid_grant"


@pytest.mark.security
def test_a_wrong_user_code_approves_nothing(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    wrong = "BCDF-GHJK" if user_code != "BCDF-GHJK" else "ZZZZ-ZZZZ"
    refused = served.answer(wrong)
    assert refused.status_code == 400
    assert "Unknown, expired or already used code." in refused.text
    assert served.error_of_poll(device_code) == "authorization_pending"


@pytest.mark.security
def test_a_wrong_password_approves_nothing_and_says_nothing_of_the_code(
    served: ServedIssuer,
) -> None:
    device_code, user_code = start(served)
    for code in (user_code, "BCDF-GHJK"):  # live or not: the same answer
        refused = served.answer(code, "alice", password="guess")
        assert refused.status_code == 401 and "Wrong username or password." in refused.text
    assert served.error_of_poll(device_code) == "authorization_pending"


@pytest.mark.security
def test_a_code_once_answered_cannot_be_answered_again(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    served.answer(user_code, "alice")
    assert served.answer(user_code, "bob").status_code == 400  # bob cannot take it over
    access = served.poll(device_code)["access_token"]
    assert tokens.token_claims_unverified(access)["preferred_username"] == "alice"


def test_a_user_code_may_be_typed_sloppily(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    assert served.answer(f" {user_code.replace('-', '').lower()} ").status_code == 200
    assert "access_token" in served.poll(device_code)


def test_the_page_refuses_a_post_that_is_neither_approve_nor_deny(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    assert served.answer(user_code, action="").status_code == 400
    assert served.error_of_poll(device_code) == "authorization_pending"


@pytest.mark.security
def test_the_page_escapes_what_it_echoes_and_cannot_be_framed(served: ServedIssuer) -> None:
    evil = '"><script>alert(1)</script>'
    page = requests.get(f"{served.url}/device", params={"user_code": evil}, timeout=10)
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text
    posted = served.answer(evil)
    assert "<script>" not in posted.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.security
def test_no_log_line_holds_a_code_or_a_token(
    served: ServedIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    device_code, user_code = start(served)
    served.error_of_poll(device_code)
    served.error_of_poll(device_code)  # slow_down
    requests.get(f"{served.url}/device", params={"user_code": user_code}, timeout=10)
    served.answer(user_code, "alice", password="guess")
    served.answer(user_code)
    served.advance(10)
    response = served.poll(device_code)
    served.error_of_poll(device_code)
    assert any("grant=device_code" in r.getMessage() for r in caplog.records)
    secrets = [device_code, user_code, user_code.replace("-", "")]
    secrets += [response["access_token"], response["refresh_token"], served.password("alice")]
    issuers = [r for r in caplog.records if r.name.startswith(("rjq_facility", "tornado"))]
    for record in issuers:  # not the test's own browser (urllib3 logs the URL it opens)
        text = record.getMessage() + repr(record.args)
        assert not [s for s in secrets if s in text], record.getMessage()


# Revocation -----------------------------------------------------------------------------------


def revoke(served: ServedIssuer, token: str, **client: str | None) -> None:
    client.setdefault("client_id", CLIENT)
    tokens.revoke_token(f"{served.url}/revoke", token, **client)  # type: ignore[arg-type]


def test_a_revoked_refresh_token_is_dead(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    served.answer(user_code)
    refresh = served.poll(device_code)["refresh_token"]
    revoke(served, refresh)
    assert not served.refresh_works(refresh)
    revoke(served, refresh)  # again: an unknown token is no error


def test_an_access_token_cannot_be_revoked_and_says_so(served: ServedIssuer) -> None:
    device_code, user_code = start(served)
    served.answer(user_code)
    access = served.poll(device_code)["access_token"]
    with pytest.raises(tokens.TokenRequestError) as err:
        revoke(served, access, token_type_hint="access_token")
    assert err.value.error == "unsupported_token_type"


@pytest.mark.security
def test_a_client_cannot_revoke_another_clients_token(served: ServedIssuer) -> None:
    secret = served.issuer.clients[issuer.HUB_CLIENT]["secret"]
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": served.password("alice"),
    }
    hub = tokens.token_request(
        f"{served.url}/token", form, client_id=issuer.HUB_CLIENT, client_secret=secret
    )
    with pytest.raises(tokens.TokenRequestError) as err:
        revoke(served, hub["refresh_token"])
    assert err.value.error == "unauthorized_client"
