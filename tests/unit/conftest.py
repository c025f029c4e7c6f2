"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .jwt_issuer import Issuer


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    """A real OIDC issuer on loopback (one RSA key), one per test module."""
    issuer = Issuer()
    yield issuer
    issuer.close()
