"""Per-address limits of the gateway: how many logins may be pending, how many may fail.

The gateway is on the internet and its login is a bearer token, so two cheap attacks need a
bound: holding many connections open before they authenticate (each costs a key exchange and a
slot until ``login_timeout``), and guessing tokens (each guess costs an authenticator call, which
may be a request to the Hub). Both are counted per client IP address:

* at most ``max_preauth`` connections of one address may be unauthenticated at once; the next is
  refused before the key exchange (:meth:`AddressLimits.admit`);
* after ``max_failures`` refused logins of one address within ``failure_window`` seconds, its
  further logins are refused *without* asking the authenticator, until the oldest of those
  failures leaves the window (:meth:`AddressLimits.check_attempt`).

Memory stays bounded: an address is forgotten once it has no pending connection and no failure
in the window, and at most ``max_tracked`` addresses with failures are remembered (the one whose
last failure is oldest goes first).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def peer_address(peername: Any) -> str:
    """The address to count a connection under: the peer's host without its port.

    An IPv4-mapped IPv6 address (a dual-stack listener) counts as the IPv4 address it maps, so a
    client is one address whichever socket family accepted it.
    """
    if not peername:
        return "?"
    host = str(peername[0]) if isinstance(peername, tuple | list) else str(peername)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass
class AddressLimits:
    """Counts pending logins and recent failures per client address (see the module doc).

    ``clock`` is :func:`time.monotonic` unless a test passes its own.
    """

    max_preauth: int = 8
    max_failures: int = 5
    failure_window: float = 60.0
    max_tracked: int = 65536
    clock: Callable[[], float] = time.monotonic
    _preauth: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    #: address -> times of its latest ``max_failures`` failures; ordered by latest failure.
    _failures: OrderedDict[str, deque[float]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.max_preauth < 1 or self.max_failures < 1 or self.max_tracked < 1:
            raise ValueError("max_preauth, max_failures and max_tracked must be at least 1")
        if self.failure_window <= 0:
            raise ValueError("failure_window must be positive")

    # unauthenticated connections

    def admit(self, addr: str) -> bool:
        """A connection from ``addr`` starts: True (and counted) if it may go on, else False."""
        pending = self._preauth.get(addr, 0)
        if pending >= self.max_preauth:
            return False
        self._preauth[addr] = pending + 1
        return True

    def authenticated(self, addr: str) -> None:
        """An admitted connection of ``addr`` logged in: it no longer counts as pending."""
        self._release(addr)

    def closed(self, addr: str, authenticated: bool) -> None:
        """An admitted connection of ``addr`` ended (``authenticated``: after logging in)."""
        if not authenticated:
            self._release(addr)

    def _release(self, addr: str) -> None:
        pending = self._preauth.get(addr, 0) - 1
        if pending > 0:
            self._preauth[addr] = pending
        else:
            self._preauth.pop(addr, None)

    def pending(self, addr: str) -> int:
        """How many connections of ``addr`` are admitted and not yet authenticated."""
        return self._preauth.get(addr, 0)

    # failed logins

    def check_attempt(self, addr: str) -> str | None:
        """None if ``addr`` may try to log in now, else why not (a message for the client)."""
        now = self.clock()
        self._forget_idle(now)
        times = self._failures.get(addr)
        if times is None or len(times) < self.max_failures:
            return None
        wait = times[0] + self.failure_window - now
        if wait <= 0:
            return None
        return f"too many failed logins from {addr}: try again in {math.ceil(wait)} s"

    def failed(self, addr: str) -> None:
        """Record one refused login of ``addr``."""
        now = self.clock()
        times = self._failures.get(addr)
        if times is None:
            times = self._failures[addr] = deque(maxlen=self.max_failures)
        else:
            self._failures.move_to_end(addr)
        times.append(now)
        self._forget_idle(now)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)

    def failures(self, addr: str) -> int:
        """How many failures of ``addr`` are still in the window (at most ``max_failures``)."""
        horizon = self.clock() - self.failure_window
        return sum(t > horizon for t in self._failures.get(addr, ()))

    def tracked(self) -> int:
        """How many addresses are remembered (pending connections or recent failures)."""
        return len(self._preauth.keys() | self._failures.keys())

    def _forget_idle(self, now: float) -> None:
        # Oldest latest-failure first: stop at the first address still inside the window.
        horizon = now - self.failure_window
        while self._failures:
            addr, times = next(iter(self._failures.items()))
            if times[-1] > horizon:
                break
            del self._failures[addr]
