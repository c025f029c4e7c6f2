"""Per-address limits of the gateway: pending logins and failed logins.

Specification: one client address may hold at most 8 unauthenticated connections at once (the
9th is closed before the SSH handshake, and a logged-in connection no longer counts); after 5
refused logins within 60 s, its next logins are refused without the token being checked, with a
reason that says when to try again, until the oldest failure is a minute old. An issuer outage
is not a failed guess. Addresses are forgotten once they have nothing counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from remote_jobqueue.gateway import (
    AddressLimits,
    AuthenticationFailed,
    Gateway,
    Identity,
    TunnelAuthError,
    TunnelUnreachable,
    connect_gateway,
    load_host_keys,
    load_or_create_host_key,
    main,
    public_key_text,
    serve,
)
from remote_jobqueue.gateway.cli import _limits, _parser
from remote_jobqueue.gateway.limits import peer_address

from ..waiting import async_wait_until

pytestmark = pytest.mark.timeout(30)

ADDR = "10.0.0.5"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limits(clock: FakeClock) -> AddressLimits:
    return AddressLimits(clock=clock)


# Unauthenticated connections --------------------------------------------------------------------


def test_defaults() -> None:
    limits = AddressLimits()
    assert (limits.max_preauth, limits.max_failures, limits.failure_window) == (8, 5, 60.0)


def test_eight_pending_connections_per_address_then_refused(limits: AddressLimits) -> None:
    assert [limits.admit(ADDR) for _ in range(9)] == [True] * 8 + [False]
    assert limits.pending(ADDR) == 8
    assert limits.admit("10.0.0.6")  # another address has its own count


def test_a_login_or_a_close_gives_the_slot_back(limits: AddressLimits) -> None:
    for _ in range(8):
        limits.admit(ADDR)
    limits.authenticated(ADDR)
    assert limits.admit(ADDR)
    limits.closed(ADDR, authenticated=False)
    assert limits.admit(ADDR)
    # a logged-in connection that closes had already given its slot back
    limits.closed(ADDR, authenticated=True)
    assert not limits.admit(ADDR)
    assert limits.pending(ADDR) == 8


def test_an_address_without_pending_connections_is_forgotten(limits: AddressLimits) -> None:
    limits.admit(ADDR)
    limits.admit(ADDR)
    limits.authenticated(ADDR)
    limits.closed(ADDR, authenticated=False)
    assert limits.pending(ADDR) == 0
    assert limits.tracked() == 0


# Failed logins ------------------------------------------------------------------------------------


def test_five_failures_refuse_the_sixth_attempt_with_when_to_retry(
    limits: AddressLimits, clock: FakeClock
) -> None:
    for _ in range(5):
        assert limits.check_attempt(ADDR) is None
        limits.failed(ADDR)
        clock.now += 1
    # the oldest failure was 5 s ago: it leaves the window in 55 s
    assert limits.check_attempt(ADDR) == ("too many failed logins from 10.0.0.5: try again in 55 s")
    assert limits.check_attempt("10.0.0.6") is None  # others are not punished
    clock.now += 17.5
    assert limits.check_attempt(ADDR) == (
        "too many failed logins from 10.0.0.5: try again in 38 s"  # 37.5 s, rounded up
    )


def test_the_window_slides(limits: AddressLimits, clock: FakeClock) -> None:
    limits.failed(ADDR)  # t = 0
    clock.now += 30
    for _ in range(4):  # t = 30
        limits.failed(ADDR)
    assert limits.check_attempt(ADDR) is not None
    clock.now += 30  # the first failure has left the window, the other four have not
    assert limits.check_attempt(ADDR) is None
    limits.failed(ADDR)
    assert limits.check_attempt(ADDR) == ("too many failed logins from 10.0.0.5: try again in 30 s")
    clock.now += 30
    assert limits.check_attempt(ADDR) is None
    assert limits.failures(ADDR) == 1


def test_failures_are_forgotten_a_window_after_the_last(
    limits: AddressLimits, clock: FakeClock
) -> None:
    for i in range(100):
        limits.failed(f"10.1.{i // 256}.{i % 256}")
        clock.now += 0.1
    assert limits.tracked() == 100
    clock.now += 60
    limits.check_attempt(ADDR)
    assert limits.tracked() == 0


def test_at_most_max_tracked_addresses_are_remembered(clock: FakeClock) -> None:
    limits = AddressLimits(max_tracked=10, clock=clock)
    for i in range(50):
        for _ in range(5):
            limits.failed(f"10.2.0.{i}")
    assert limits.tracked() == 10
    assert limits.check_attempt("10.2.0.49") is not None  # the most recent are kept
    assert limits.check_attempt("10.2.0.0") is None


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AddressLimits(max_preauth=0)
    with pytest.raises(ValueError, match="positive"):
        AddressLimits(failure_window=0)


@pytest.mark.parametrize(
    ("peername", "address"),
    [
        (("10.0.0.5", 40000), "10.0.0.5"),
        (("::ffff:10.0.0.5", 40000, 0, 0), "10.0.0.5"),
        (("2001:db8::1", 40000, 0, 0), "2001:db8::1"),
        (None, "?"),
    ],
)
def test_the_address_is_the_host_without_the_port(peername: object, address: str) -> None:
    assert peer_address(peername) == address


# The options --------------------------------------------------------------------------------------


def test_cli_options_set_the_limits() -> None:
    args = _parser().parse_args(
        ["--host-key", "k", "--max-preauth-per-address", "3", "--max-failed-logins", "2"]
    )
    limits = _limits(args)
    assert (limits.max_preauth, limits.max_failures) == (3, 2)
    defaults = _limits(_parser().parse_args(["--host-key", "k"]))
    assert (defaults.max_preauth, defaults.max_failures) == (8, 5)


def test_cli_refuses_a_limit_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--host-key", "k", "--max-failed-logins", "0"])
    assert "must be at least 1, not 0" in capsys.readouterr().err


# A real gateway ---------------------------------------------------------------------------------


class Authenticator:
    """``good`` is alice's token; ``down`` fails as if the issuer were unreachable."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def authenticate(self, username: str, secret: str) -> Identity:
        self.seen.append(secret)
        if secret == "good":
            return Identity("https://issuer.test", "sub-alice", "alice", time.time() + 600)
        if secret == "down":
            raise AuthenticationFailed("issuer unreachable", temporary=True)
        raise AuthenticationFailed("unknown token")


@dataclass
class Env:
    gateway: Gateway
    authenticator: Authenticator
    clock: FakeClock
    host_keys: list[asyncssh.SSHKey]

    async def login(self, token: str) -> None:
        conn = await connect_gateway(f"127.0.0.1:{self.gateway.port}", self.host_keys, token)
        conn.close()
        await conn.wait_closed()


@pytest_asyncio.fixture(loop_scope="function")
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    key_path = tmp_path / "host_key"
    keys = load_host_keys(public_key_text(load_or_create_host_key(key_path)))
    authenticator, clock = Authenticator(), FakeClock()
    gateway, _ = await serve(
        "127.0.0.1", 0, key_path, authenticator, limits=AddressLimits(clock=clock)
    )
    async with gateway:
        yield Env(gateway, authenticator, clock, keys)


async def _raw_connection(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A TCP connection that never starts the SSH handshake; what the gateway first sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        first = await asyncio.wait_for(reader.readline(), 5)
    except ConnectionError:
        first = b""
    return reader, writer, first


@pytest.mark.security
async def test_ninth_pending_connection_of_an_address_is_closed(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="remote_jobqueue.gateway.server")
    port = env.gateway.port
    pending = [await _raw_connection(port) for _ in range(8)]
    try:
        assert all(first.startswith(b"SSH-2.0-") for _, _, first in pending)
        _, ninth, first = await _raw_connection(port)
        assert first == b""  # closed without even the server's version line
        ninth.close()
        assert "too many unauthenticated connections from 127.0.0.1: refused" in [
            r.getMessage() for r in caplog.records
        ]
        # to our clients that is an unreachable gateway, which they retry with backoff
        with pytest.raises(TunnelUnreachable):
            await env.login("good")
        assert env.authenticator.seen == []
        # another address is not affected (127.0.0.2 is loopback too)
        _, other, first = await _raw_connection(port, source="127.0.0.2")
        assert first.startswith(b"SSH-2.0-")
        other.close()
        # a pending connection that goes away gives its slot back
        pending.pop()[1].close()
        await async_wait_until(
            lambda: env.gateway.limits.pending("127.0.0.1") == 7, 10, "slot given back"
        )
        _, writer, first = await _raw_connection(port)
        assert first.startswith(b"SSH-2.0-")
        pending.append((_, writer, first))
    finally:
        for _, writer, _ in pending:
            writer.close()
    await async_wait_until(lambda: env.gateway.limits.tracked() == 0, 10, "all slots back")


async def test_logged_in_connections_do_not_count_as_pending(env: Env) -> None:
    keys, address = env.host_keys, f"127.0.0.1:{env.gateway.port}"
    conns = [await connect_gateway(address, keys, "good") for _ in range(10)]
    try:
        assert env.gateway.limits.pending("127.0.0.1") == 0
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.security
async def test_after_five_bad_tokens_a_good_one_is_refused_unchecked(env: Env) -> None:
    for _ in range(5):
        with pytest.raises(TunnelAuthError) as bad:
            await env.login("guess")
        assert bad.value.reason == "unknown token"
    env.clock.now += 20
    with pytest.raises(TunnelAuthError) as refused:
        await env.login("good")
    assert refused.value.reason == "too many failed logins from 127.0.0.1: try again in 40 s"
    assert refused.value.temporary  # the client retries the same token later
    assert env.authenticator.seen == ["guess"] * 5  # the good token was never looked at
    env.clock.now += 40
    await env.login("good")


async def test_an_issuer_outage_is_not_counted_as_failed_logins(env: Env) -> None:
    for _ in range(6):
        with pytest.raises(TunnelAuthError) as down:
            await env.login("down")
        assert down.value.temporary
    await env.login("good")
    assert env.gateway.limits.failures("127.0.0.1") == 0
