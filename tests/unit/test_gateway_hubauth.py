"""Gateway logins with JupyterHub API tokens, against a fake Hub API on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from remote_jobqueue.gateway import AuthenticationFailed, ChainAuthenticator
from remote_jobqueue.gateway.hubauth import HubTokenAuthenticator

ALICE = "a1" * 16
SERVICE = "s2" * 16


class FakeHub:
    """``GET /hub/api/user``: alice for her token, a service for another, 403 for the rest."""

    def __init__(self) -> None:
        self.requests = 0
        self.status: int | None = None
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.requests += 1
                token = self.headers.get("Authorization", "").removeprefix("token ")
                models = {ALICE: {"kind": "user", "name": "alice"}, SERVICE: {"kind": "service"}}
                status = hub.status or (200 if token in models else 403)
                body = json.dumps(models.get(token, {})).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    yield fake
    fake.server.shutdown()


async def test_a_users_hub_token_logs_in_as_that_user(hub):
    assert await HubTokenAuthenticator(hub.api).authenticate("token", ALICE) == "alice"


async def test_answers_are_cached_so_reconnects_do_not_hammer_the_hub(hub):
    auth = HubTokenAuthenticator(hub.api, ttl=60)
    for _ in range(5):
        assert await auth.authenticate("token", ALICE) == "alice"
    assert hub.requests == 1


async def test_unknown_tokens_and_service_tokens_are_refused(hub):
    auth = HubTokenAuthenticator(hub.api)
    with pytest.raises(AuthenticationFailed, match="does not know") as err:
        await auth.authenticate("token", "f" * 32)
    assert not err.value.temporary and "f" * 32 not in str(err.value)
    with pytest.raises(AuthenticationFailed, match="not belong to a Hub user"):
        await auth.authenticate("token", SERVICE)


async def test_a_jwt_is_never_sent_to_the_hub(hub):
    with pytest.raises(AuthenticationFailed, match="not a JupyterHub API token"):
        await HubTokenAuthenticator(hub.api).authenticate("token", "eyJhbGc.eyJzdWIi.c2ln")
    assert hub.requests == 0


async def test_a_hub_that_is_down_is_a_temporary_failure(hub):
    hub.status = 503
    with pytest.raises(AuthenticationFailed, match="the Hub answered 503") as err:
        await HubTokenAuthenticator(hub.api).authenticate("token", ALICE)
    assert err.value.temporary


async def test_chained_after_the_jwt_check_either_secret_works(hub):
    class JWTOnly:
        async def authenticate(self, username: str, secret: str) -> str:
            if secret.startswith("eyJ"):
                return "alice"
            raise AuthenticationFailed("malformed token")

    chain = ChainAuthenticator(JWTOnly(), HubTokenAuthenticator(hub.api))
    assert await chain.authenticate("token", "eyJhbGc.eyJzdWIi.c2ln") == "alice"
    assert await chain.authenticate("token", ALICE) == "alice"
