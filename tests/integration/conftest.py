"""Fixtures the integration tests share."""

from __future__ import annotations

import dask.config
import pytest

from remote_jobqueue import schedd as sched
from rjq_facility import lifecycle


@pytest.fixture
def alice(facility, monkeypatch):
    """This process acts as alice, as a notebook would: her client settings, token file, site
    catalogue and data settings."""
    env = lifecycle.env(facility, "alice")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sched.use_config(env["CONDOR_CONFIG"])
    settings = lifecycle.client_dask_config(facility, "alice")["remote-jobqueue"]
    with dask.config.set({f"remote-jobqueue.{key}": value for key, value in settings.items()}):
        yield env
