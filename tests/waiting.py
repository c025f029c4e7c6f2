"""Waiting for something to happen in a test: poll a condition, never sleep a fixed time.

A test waits for the *condition* it needs, with a timeout far longer than the condition should
take, so a slow machine only makes it slower, never red; a broken implementation still fails, once
the timeout runs out, with ``what`` saying what did not happen. Same shape as the integration
tests' own ``wait_until(predicate, timeout, what, poll)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.5) -> T:
    """The first truthy value of ``predicate()``; AssertionError if none within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(poll)


async def async_wait_until(
    predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.01
) -> T:
    """As :func:`wait_until`, in a running event loop (which goes on running meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(poll)
