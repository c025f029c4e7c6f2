"""Shared fixtures: the real development facility, started once per test session."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from rjq_facility import lifecycle
from rjq_facility.config import FacilityConfig


def pytest_report_header() -> str:
    """Which Dask this session tests (scripts/test.sh runs some tests on two)."""
    import dask
    import distributed

    return f"dask {dask.__version__}, distributed {distributed.__version__}, {sys.prefix}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
    # Checks of what the whole suite left behind (leaked secrets) run after everything else.
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


@pytest.fixture(scope="session", autouse=True)
def client_log() -> None:
    """The log records of this process (the client side: ours from DEBUG, the libraries' from
    INFO) in one file that the leak check searches like the daemons' logs."""
    from tests.integration.secrets_seen import CLIENT_LOG

    os.close(os.open(CLIENT_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    handler = logging.FileHandler(CLIENT_LOG, mode="a")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root, ours = logging.getLogger(), logging.getLogger("remote_jobqueue")
    levels = root.level, ours.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    ours.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(levels[0])
    ours.setLevel(levels[1])
    handler.close()
    CLIENT_LOG.unlink(missing_ok=True)


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
