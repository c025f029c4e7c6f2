"""Data through the nearest cache, and the dimuon analysis end to end on the facility.

Specification (issue 5):
1. a worker job and the scheduler job (the bundle) of a cluster at T2_A read the dataset through
   T2_A's own cache, while the same read from the notebook side goes through the hub's cache;
2. each example analysis (uproot/awkward, ROOT RDataFrame) gives exactly the same histogram
   contents on a cluster at T2_A as in one local process, and reports events processed and
   events per second;
3. so does the ttbar analysis (coffea's processor on the cluster's Client), over the ttbar and
   W+jets samples at the origin, with its systematic variations.

The examples run as separate processes, with alice's client settings, as a user would run them:
ROOT's bundled XRootD client must not share a process with the Python ``XRootD`` bindings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dask.distributed import Client

from remote_jobqueue import RemoteHTCondorCluster
from remote_jobqueue import schedd as sched
from remote_jobqueue.analysis import dimuon, ttbar
from remote_jobqueue.data import data_server, to_url
from rjq_facility import dataset, ttbar_dataset, xrootd

from .helpers import user_env

pytestmark = pytest.mark.timeout(420)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: A subset keeps the suite fast: two files, 500 k events, one file per worker.
FILES = 2


def cluster_jobs(facility, cluster) -> list:
    schedd = sched.locate(facility.collector, facility.schedd_name)
    return sched.job_ads(schedd, f'RjqClusterId == "{cluster.cluster_id}"', ["RjqRole"])


def test_jobs_at_T2_A_read_through_its_cache_and_the_notebook_through_the_hub_cache(
    facility, alice
):
    url = to_url(dataset.DATASET_LFNS[1], facility.origin_url)
    # A worker in a job of its own, not the one the scheduler job can carry.
    cluster = RemoteHTCondorCluster(
        site="T2_A", cores=1, n_workers=1, resident_worker=False, quiet=True
    )
    with cluster, Client(cluster) as client:
        client.wait_for_workers(1, timeout=180)
        (worker_server,) = client.run(data_server, url).values()
        bundle_server = client.run_on_scheduler(data_server, url)
        worker_jobs = [ad for ad in cluster_jobs(facility, cluster) if ad["RjqRole"] == "worker"]
    assert len(worker_jobs) == 1
    site = facility.site("T2_A")
    assert worker_server == facility.cache_url_for("T2_A")
    assert worker_server == f"root://{site.cache_address}:{facility.cache_port}"
    assert bundle_server == facility.cache_url_for("T2_A")
    assert data_server(url) == facility.hub_cache_url != facility.origin_url


@pytest.fixture(scope="module")
def run_example(facility, tmp_path_factory):
    """Run an example script as alice; the same run twice gives the first result again."""
    results: dict[tuple[str, ...], dict] = {}
    workdir = tmp_path_factory.mktemp("examples")

    def run(script: str, *options: str) -> dict:
        key = (script, *options)
        if key not in results:
            out = workdir / f"{'-'.join(key).replace('.py', '')}.json"
            png = out.with_suffix(".png")
            command = [sys.executable, str(EXAMPLES / script), "--files", str(FILES)]
            proc = subprocess.run(
                [*command, "--json", str(out), "--png", str(png), *options],
                env=user_env(facility, "alice"),
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=360,
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "events processed" in proc.stdout and "events/s" in proc.stdout, proc.stdout
            assert png.stat().st_size > 0
            results[key] = json.loads(out.read_text())
        return results[key]

    return run


@pytest.mark.parametrize("script", ["dimuon_uproot.py", "dimuon_rdataframe.py"])
def test_an_analysis_gives_the_same_histogram_at_T2_A_as_in_one_local_process(
    facility, run_example, script
):
    local = run_example(script)
    remote = run_example(script, "--site", "T2_A", "--workers", "2")
    manifest = dataset.read_manifest(xrootd.origin_data_dir(facility))
    expected_events = sum(entry["events"] for entry in manifest["files"][:FILES])
    assert local["events"] == remote["events"] == expected_events
    assert len(local["counts"]) == dimuon.BINS + 2
    assert remote["counts"] == local["counts"]
    # A Z peak, not an empty or flat histogram: the bin of 91 GeV is the fullest one.
    assert max(range(1, dimuon.BINS + 1), key=lambda b: local["counts"][b]) == 92


def test_uproot_and_rdataframe_give_identical_histograms(run_example):
    by_uproot = run_example("dimuon_uproot.py")
    by_root = run_example("dimuon_rdataframe.py")
    assert by_uproot["events"] == by_root["events"]
    assert by_uproot["counts"] == by_root["counts"]


def test_the_ttbar_analysis_gives_the_same_histograms_at_T2_A_as_in_one_local_process(
    facility, run_example
):
    local = run_example("ttbar_coffea.py")
    remote = run_example("ttbar_coffea.py", "--site", "T2_A", "--workers", "2")
    manifest = ttbar_dataset.read_manifest(xrootd.origin_data_dir(facility))
    expected = {
        sample: sum([e["events"] for e in manifest["files"] if e["sample"] == sample][:FILES])
        for sample in ttbar.SAMPLES
    }
    assert local["events"] == remote["events"] == expected
    assert local["engine"] == "coffea, one process" and remote["engine"] == "coffea on Dask"
    assert ttbar.differences(local, remote) == []
    assert len(local["values"]) == 25 and local["variations"] == list(ttbar.VARIATIONS)
    # Not two empty histograms: ttbar events in 4j2b (observable, region, process, variation).
    assert sum(bins[1][0][0] for bins in local["values"]) > 1000
