"""Per-address limits of the gateway: pending logins and failed logins.

Specification: one client address may hold at most 8 unauthenticated connections at once (the
9th is closed before the SSH handshake, and a logged-in connection no longer counts); after 5
refused logins within 60 s, its next logins are refused without the token being checked, with a
reason that says when to try again, until the oldest failure is a minute old. An issuer outage
is not a failed guess. Addresses are forgotten once they have nothing counted.
"""

from __future__ import annotations

import pytest

from remote_jobqueue.gateway import AddressLimits
from remote_jobqueue.gateway.limits import peer_address

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
