"""Jobs read through their site's cache with nothing from the client's machine but its URL.

Specification: a cluster's jobs get the site's cache from the catalogue as ``RJQ_XROOTD_CACHE``
(never a client path); a job turns it into the proxy plugin's settings in its own scratch
directory; workers do so through a Dask preload, before any task can load the XRootD client.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.config

from remote_jobqueue import RemoteHTCondorCluster
from remote_jobqueue.data import (
    CACHE_VARIABLE,
    cache_environment,
    dask_setup,
    job_environment,
    use_nearest_cache,
)
from remote_jobqueue.spec import WorkerSpec

CACHE = "root://10.213.77.11:11095"


def test_a_job_gets_the_cache_url_and_timeouts_but_no_path_of_the_client():
    env = job_environment(CACHE)
    assert env[CACHE_VARIABLE] == CACHE
    assert "XRD_PLUGINCONFDIR" not in env and "XROOT_PROXY" not in env
    # the notebook's fail-fast timeouts, and they do fail fast (seconds, not ten minutes)
    notebook = cache_environment(CACHE, Path("/unused"))
    timeouts = ("XRD_CONNECTIONRETRY", "XRD_CONNECTIONWINDOW", "XRD_REQUESTTIMEOUT")
    assert {k: env[k] for k in timeouts} == {k: notebook[k] for k in timeouts}
    assert int(env["XRD_CONNECTIONRETRY"]) * int(env["XRD_CONNECTIONWINDOW"]) <= 30
    assert 0 < int(env["XRD_REQUESTTIMEOUT"]) <= 300


def test_a_job_writes_the_plugin_conf_in_its_scratch_dir_and_points_the_client_at_it(tmp_path):
    environ = {CACHE_VARIABLE: CACHE, "_CONDOR_SCRATCH_DIR": str(tmp_path)}
    assert use_nearest_cache(environ=environ) == CACHE
    assert environ["XROOT_PROXY"] == "root://10.213.77.11:11095//"
    assert environ["XRD_PLUGINCONFDIR"] == str(tmp_path / ".xrootd-plugins")
    assert "libXrdClProxyPlugin.so" in (tmp_path / ".xrootd-plugins" / "proxy.conf").read_text()


def test_without_a_cache_nothing_changes(tmp_path):
    environ = {"XROOT_PROXY": "root://elsewhere//"}
    assert use_nearest_cache(tmp_path, environ) is None
    assert environ == {"XROOT_PROXY": "root://elsewhere//"}
    assert list(tmp_path.iterdir()) == []


def test_the_workers_preload_hook_sets_up_the_cache_only_when_the_job_has_one(
    tmp_path, monkeypatch
):
    # the hook works on this process's environment: let monkeypatch restore every variable
    for key in (CACHE_VARIABLE, *cache_environment(CACHE, tmp_path)):
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    monkeypatch.setenv("_CONDOR_SCRATCH_DIR", str(tmp_path))
    before = dict(os.environ)
    dask_setup(None)  # harmless where no cache was given
    changed = {k for k in before.keys() | os.environ.keys() if before.get(k) != os.environ.get(k)}
    assert changed == set()  # (names only: a failure must not print the environment)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setenv(CACHE_VARIABLE, CACHE)
    dask_setup(None)
    assert os.environ["XROOT_PROXY"] == "root://10.213.77.11:11095//"
    assert os.environ["XRD_PLUGINCONFDIR"] == str(tmp_path / ".xrootd-plugins")
    assert (tmp_path / ".xrootd-plugins" / "proxy.conf").exists()


def test_workers_preload_the_cache_setup_only_when_they_have_a_cache():
    with_cache = WorkerSpec(environment=job_environment(CACHE))
    assert "remote_jobqueue.data" in with_cache.worker_args("tcp://s:1", "w")
    assert "--preload" not in WorkerSpec().worker_args("tcp://s:1", "w")


async def test_a_cluster_sends_its_sites_cache_to_the_scheduler_and_worker_jobs(monkeypatch):
    monkeypatch.setenv("XRD_PLUGINCONFDIR", "/only/on/the/client")
    site = {
        "schedd": "s",
        "collector": "c:9618",
        "gateway": "g:22",
        "cache": CACHE,
        "python": "/sw/py",
    }
    with dask.config.set({"remote-jobqueue.sites": {"T2_A": site}}):
        # Constructed inside a running loop and never awaited: nothing is submitted.
        cluster = RemoteHTCondorCluster(site="T2_A", asynchronous=True)
    worker = cluster.worker_spec.submit_description("tcp://s:1", cluster.cluster_id)
    for description in (cluster.scheduler_job_description(), worker):
        assert f"{CACHE_VARIABLE}={CACHE}" in description["environment"]
        assert "/only/on/the/client" not in description["environment"]
    assert "--preload remote_jobqueue.data" in worker["arguments"]
