"""A job at a site reads the dataset through that site's nearest cache.

Specification: with the client settings the facility hands out, a `root://` open inside an
HTCondor job at T2_A is served by T2_A's own cache, and at the other sites by the hub's cache.
"""

from __future__ import annotations

import json

import pytest

from remote_jobqueue import schedd as sched
from remote_jobqueue.data import cache_environment, write_proxy_plugin_conf
from remote_jobqueue.spec import condor_environment
from rjq_facility import condor, dataset

from .helpers import python_job


@pytest.mark.parametrize("site", ["T2_A", "T2_B"])
def test_a_job_at_a_site_reads_through_the_nearest_cache(facility, site, tmp_path):
    plugin_dir = write_proxy_plugin_conf(facility.state_dir / "xrootd" / "client-plugins")
    env = {
        **cache_environment(facility.cache_url_for(site), plugin_dir),
        "RJQ_XROOTD_ORIGIN": facility.origin_url,
    }
    lfn = dataset.DATASET_LFNS[0]
    code = f"""
        import runpy, sys
        sys.argv = ["remote_jobqueue.data", "probe", "{lfn}"]
        runpy.run_module("remote_jobqueue.data", run_name="__main__")
    """
    desc = python_job(
        code,
        tmp_path,
        requirements=f'TARGET.SiteName == "{site}"',
        environment=condor_environment(env),
    )
    with condor._client_env(facility, "alice"):
        schedd = sched.locate(facility.collector, "hub@rjq.test")
        cluster = sched.submit(schedd, desc)
        try:
            sched.wait_for_status(schedd, cluster, {sched.JobStatus.COMPLETED}, timeout=180)
            schedd.retrieve(f"ClusterId == {cluster}")
        finally:
            sched.remove(schedd, f"ClusterId == {cluster}")
    out = (tmp_path / "out.txt").read_text()
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    assert result.get("data_server") == facility.cache_url_for(site), (
        out + (tmp_path / "err.txt").read_text()
    )
    assert result["events"] > 0
