"""The bundle takes a renewed bearer token from its client, and only a real renewal.

Specification: a token for the same subject and issuer that lives longer replaces the bundle's
own file (atomically, 0600); a token for someone else, or one that expires sooner, does not.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import jwt
import pytest

from remote_jobqueue.bundle.agent import SiteAgent


def _token(sub: str = "alice", iss: str = "https://issuer", lifetime: int = 600) -> str:
    claims = {"sub": sub, "iss": iss, "exp": int(time.time()) + lifetime}
    return jwt.encode(claims, "not-a-real-key-but-long-enough-for-hs256", algorithm="HS256")


@pytest.fixture
def agent(tmp_path):
    token_file = tmp_path / "bearer-token"
    token_file.write_text(_token(lifetime=60))
    token_file.chmod(0o600)
    scheduler = SimpleNamespace(handlers={}, workers={}, address="tcp://s:1")
    return SiteAgent(scheduler, None, "rjq-x", token_file=token_file)  # type: ignore[arg-type]


def test_a_longer_lived_token_of_the_same_user_replaces_ours(agent):
    renewed = _token(lifetime=3600)
    assert agent.renew_token(renewed)
    assert agent.token_file.read_text() == renewed
    assert agent.token_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "other",
    [
        _token(sub="mallory", lifetime=3600),
        _token(iss="https://elsewhere", lifetime=3600),
        _token(lifetime=10),
        "not a token",
    ],
    ids=["another user", "another issuer", "expires sooner", "garbage"],
)
def test_anything_else_is_refused_and_ours_kept(agent, other):
    before = agent.token_file.read_text()
    assert not agent.renew_token(other)
    assert agent.token_file.read_text() == before


async def test_the_heartbeat_carries_the_renewal(agent):
    renewed = _token(lifetime=3600)
    assert (await agent.handle_heartbeat(token=renewed))["lease"] == agent.lease
    assert agent.token_file.read_text() == renewed
