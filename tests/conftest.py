"""Shared fixtures: the real development facility, started once per test session."""

from __future__ import annotations

import os

import pytest

from remote_jobqueue.facility import lifecycle
from remote_jobqueue.facility.config import FacilityConfig


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _facility_running(cfg: FacilityConfig) -> bool:
    state = lifecycle.status(cfg)
    return all(state["condor"].values()) and state["issuer"].get("running", False)


@pytest.fixture(scope="session")
def facility() -> FacilityConfig:
    """The facility, up for the whole session; taken down again if this session started it."""
    cfg = FacilityConfig()
    already = _facility_running(cfg)
    lifecycle.up(cfg)
    yield cfg
    if not already and not os.environ.get("RJQ_KEEP_FACILITY"):
        lifecycle.down(cfg)
