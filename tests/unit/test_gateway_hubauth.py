"""Gateway logins with JupyterHub API tokens, against a fake Hub API (pytest-httpserver).

The Hub answers ``GET /hub/api/user`` with the token's owner and its (expanded) scopes, and
``GET /hub/api/users/<name>`` with the owner's ``auth_state`` if the token may read it.
"""

from __future__ import annotations

import json
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from remote_jobqueue.gateway import AuthenticationFailed, ChainAuthenticator, Identity
from remote_jobqueue.gateway.hubauth import GATEWAY_SCOPE, HubTokenAuthenticator

ISSUER = "https://issuer.test"
ALICE = "a1" * 16  # alice's server token: holds the gateway scope
ALICE_VISITOR = "v3" * 16  # a token alice's shared server got from a visitor's OAuth login
ALICE_OTHER = "o4" * 16  # a token of alice made for something else (read:users only)
SERVICE = "s2" * 16
GATEWAY_SERVICE = "g6" * 16  # the gateway's own token: reads every user's auth_state
NOSUB = "n5" * 16  # carol: the Hub keeps no subject for her

MODELS = {
    ALICE: {"kind": "user", "name": "alice", "scopes": [f"{GATEWAY_SCOPE}!user=alice"]},
    ALICE_VISITOR: {
        "kind": "user",
        "name": "alice",
        "scopes": ["access:servers!server=bob/", f"{GATEWAY_SCOPE}!user=bob"],
    },
    ALICE_OTHER: {"kind": "user", "name": "alice", "scopes": ["read:users!user=alice"]},
    SERVICE: {"kind": "service", "name": "cull"},
    NOSUB: {"kind": "user", "name": "carol", "scopes": [f"{GATEWAY_SCOPE}!user=carol"]},
}
AUTH_STATE = {
    "alice": {"oauth_user": {"sub": "7f0c-alice", "preferred_username": "alice"}},
    "carol": {},
}


class FakeHub:
    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.requests = 0
        self.status: int | None = None
        self.delay = 0.0
        self.auth_state_readers: list[str] = []
        server.expect_request("/hub/api/user").respond_with_handler(self._user)
        for name in AUTH_STATE:
            server.expect_request(f"/hub/api/users/{name}").respond_with_handler(self._users)
        self.api = server.url_for("/hub/api")

    def _token(self, request: Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("token ")

    def _user(self, request: Request) -> Response:
        self.requests += 1
        time.sleep(self.delay)
        model = MODELS.get(self._token(request))
        status = self.status or (200 if model else 403)
        return Response(json.dumps(model or {}), status, content_type="application/json")

    def _users(self, request: Request) -> Response:
        token = self._token(request)
        model = MODELS.get(token)
        name = request.path.rsplit("/", 1)[1]
        self.auth_state_readers.append(token)
        if token != GATEWAY_SERVICE and (model is None or model["name"] != name):
            return Response("{}", 403)
        return Response(json.dumps({"name": name, "auth_state": AUTH_STATE[name]}), 200)


@pytest.fixture
def hub(httpserver: HTTPServer) -> FakeHub:
    return FakeHub(httpserver)


async def test_a_users_hub_token_is_the_same_identity_as_their_jwts(hub):
    identity = await HubTokenAuthenticator(hub.api, ISSUER).authenticate("token", ALICE)
    assert identity.key == (ISSUER, "7f0c-alice") and identity.name == "alice"


async def test_with_a_service_token_the_gateway_reads_the_subject_itself(hub):
    """Then the user's token needs no right to read the user's OAuth tokens (auth_state)."""
    auth = HubTokenAuthenticator(hub.api, ISSUER, service_token=GATEWAY_SERVICE)
    assert (await auth.authenticate("token", ALICE)).key == (ISSUER, "7f0c-alice")
    assert hub.auth_state_readers == [GATEWAY_SERVICE]


async def test_a_hub_login_must_prove_itself_again_after_recheck(hub):
    before = time.time()
    auth = HubTokenAuthenticator(hub.api, ISSUER, ttl=60, recheck=120)
    identity = await auth.authenticate("token", ALICE)
    assert before + 120 <= identity.expires_at <= time.time() + 120


@pytest.mark.security
async def test_a_cached_answer_does_not_extend_a_login_past_the_hubs_last_word(hub):
    """A revoked token's connections end within ``recheck`` of the Hub's last answer, however
    often they renew from the cache."""
    auth = HubTokenAuthenticator(hub.api, ISSUER, ttl=60, recheck=120)
    first = await auth.authenticate("token", ALICE)
    time.sleep(1.1)
    again = await auth.authenticate("token", ALICE)  # from the cache
    assert hub.requests == 1 and again.expires_at == first.expires_at


def test_a_cache_that_outlives_the_recheck_is_refused():
    with pytest.raises(ValueError, match="ttl"):
        HubTokenAuthenticator("http://hub", ISSUER, ttl=600, recheck=300)


async def test_answers_are_cached_so_reconnects_do_not_hammer_the_hub(hub):
    auth = HubTokenAuthenticator(hub.api, ISSUER, ttl=60)
    for _ in range(5):
        assert (await auth.authenticate("token", ALICE)).name == "alice"
    assert hub.requests == 1


@pytest.mark.security
@pytest.mark.parametrize("token", [ALICE_VISITOR, ALICE_OTHER], ids=["visitor", "other-scopes"])
async def test_a_token_without_the_gateway_scope_for_its_owner_is_refused(hub, token):
    auth = HubTokenAuthenticator(hub.api, ISSUER)
    with pytest.raises(AuthenticationFailed, match=f"lacks the scope {GATEWAY_SCOPE}") as err:
        await auth.authenticate("token", token)
    assert not err.value.temporary


async def test_a_user_the_hub_holds_no_subject_for_is_refused(hub):
    with pytest.raises(AuthenticationFailed, match="no subject for carol"):
        await HubTokenAuthenticator(hub.api, ISSUER).authenticate("token", NOSUB)


async def test_unknown_tokens_and_service_tokens_are_refused(hub):
    auth = HubTokenAuthenticator(hub.api, ISSUER)
    with pytest.raises(AuthenticationFailed, match="does not know") as err:
        await auth.authenticate("token", "f" * 32)
    assert not err.value.temporary and "f" * 32 not in str(err.value)
    with pytest.raises(AuthenticationFailed, match="not belong to a Hub user"):
        await auth.authenticate("token", SERVICE)


async def test_a_jwt_is_never_sent_to_the_hub(hub):
    with pytest.raises(AuthenticationFailed, match="not a JupyterHub API token"):
        await HubTokenAuthenticator(hub.api, ISSUER).authenticate("token", "eyJhbGc.eyJzdWIi.c2ln")
    assert hub.requests == 0


async def test_a_hub_that_is_down_is_a_temporary_failure(hub):
    hub.status = 503
    with pytest.raises(AuthenticationFailed, match="the Hub answered 503") as err:
        await HubTokenAuthenticator(hub.api, ISSUER).authenticate("token", ALICE)
    assert err.value.temporary


@pytest.mark.security
async def test_a_flood_of_logins_is_turned_away_not_queued(hub):
    """Checks hold threads of their own, and no more than ``max_pending`` wait for one."""
    import asyncio

    hub.delay = 0.5
    auth = HubTokenAuthenticator(hub.api, ISSUER, threads=2, max_pending=4)
    tokens = [f"{i:02d}" * 16 for i in range(10)]  # all different: no cache hit
    results = await asyncio.gather(
        *(auth.authenticate("token", t) for t in tokens), return_exceptions=True
    )
    busy = [r for r in results if isinstance(r, AuthenticationFailed) and "busy" in r.reason]
    assert len(busy) == 6 and all(r.temporary for r in busy)
    assert hub.requests == 4


async def test_chained_after_the_jwt_check_either_secret_works(hub):
    alice = Identity(ISSUER, "7f0c-alice", "alice", time.time() + 60)

    class JWTOnly:
        async def authenticate(self, username: str, secret: str) -> Identity:
            if secret.startswith("eyJ"):
                return alice
            raise AuthenticationFailed("malformed token")

    chain = ChainAuthenticator(JWTOnly(), HubTokenAuthenticator(hub.api, ISSUER))
    assert (await chain.authenticate("token", "eyJhbGc.eyJzdWIi.c2ln")).key == alice.key
    assert (await chain.authenticate("token", ALICE)).key == alice.key
