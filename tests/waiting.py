"""Waiting for something to happen in a test: poll a condition, never sleep a fixed time.

A test waits for the *condition* it needs, with a timeout far longer than the condition should
take, so a slow machine only makes it slower, never red; a broken implementation still fails, once
the timeout runs out, with ``what`` saying what did not happen. Same shape as the integration
tests' own ``wait_until(predicate, timeout, what, poll)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _attempts(timeout: float, what: str) -> Iterator[None]:
    """One turn per look at the condition; AssertionError once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.5) -> T:
    """The first truthy value of ``predicate()``; AssertionError if none within ``timeout`` s."""
    for _ in _attempts(timeout, what):
        if value := predicate():
            return value
        time.sleep(poll)
    raise AssertionError("unreachable")


async def async_wait_until(
    predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.01
) -> T:
    """As :func:`wait_until`, in a running event loop (which goes on running meanwhile)."""
    for _ in _attempts(timeout, what):
        if value := predicate():
            return value
        await asyncio.sleep(poll)
    raise AssertionError("unreachable")
