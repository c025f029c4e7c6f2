"""The ttbar analysis (coffea) over the generated ttbar and W+jets samples, without the facility.

Specification:
- the samples carry the Electron, Muon and Jet branches the AGC selection reads, with NanoAOD's
  names and counters, and are written once (a second `generate` rewrites nothing);
- the facility's samples are where the analysis looks for them;
- the selection finds what the samples hold: a top peak in the 4j2b trijet mass, ttbar
  dominating 4j2b, more events when jets are scaled up and fewer when down, b-tag weights
  up and down around the nominal;
- a Dask run (a LocalCluster here; a cluster at T2_A in the integration tests) gives the same
  histograms as one process, bin for bin.
"""

from __future__ import annotations

import copy

import pytest
import uproot
from distributed import Client, LocalCluster

from remote_jobqueue.analysis import ttbar
from rjq_facility import ttbar_dataset

pytestmark = pytest.mark.timeout(120)

READ = {
    "Electron": {"pt", "eta", "phi", "mass", "cutBased", "sip3d"},
    "Muon": {"pt", "eta", "phi", "mass", "tightId", "sip3d", "pfRelIso04_all"},
    "Jet": {"pt", "eta", "phi", "mass", "btagCSVV2", "jetId"},
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("origin")
    paths = ttbar_dataset.generate(root)
    urls = {sample: [str(p) for p in paths if f"/{sample}/" in str(p)] for sample in ttbar.SAMPLES}
    return root, paths, urls


@pytest.fixture(scope="module")
def reference(samples):
    return ttbar.run(samples[2])


def test_the_samples_carry_the_branches_the_selection_reads_and_are_written_once(samples):
    root, paths, _ = samples
    with uproot.open(paths[0]) as f:
        branches = set(f["Events"].keys())
    for collection, fields in READ.items():
        assert f"n{collection}" in branches
        assert {f"{collection}_{field}" for field in fields} <= branches
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert ttbar_dataset.generate(root) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_the_facility_serves_the_samples_where_the_analysis_looks():
    assert list(ttbar_dataset.SAMPLES) == list(ttbar.SAMPLES)
    for sample in ttbar.SAMPLES:
        assert ttbar_dataset.sample_dir(sample) == ttbar.sample_dir(sample)


def test_the_selection_finds_a_top_peak_and_reacts_to_each_variation(reference):
    h = reference.histogram
    assert reference.events == {
        sample: events for sample, (events, _) in ttbar_dataset.SAMPLES.items()
    }
    mass = h[:, "4j2b", "TTToSemiLeptonic", "nominal"].values()
    peak = h.axes["observable"].centers[mass.argmax()]
    assert 160 < peak < 200, peak
    two_b = reference.selected("4j2b")
    assert two_b["TTToSemiLeptonic"] > 50 * two_b["WJetsToLNu"] > 0
    for region in ttbar.REGIONS:
        n = {v: sum(reference.selected(region, v).values()) for v in ttbar.VARIATIONS}
        assert n["jes_down"] < n["nominal"] < n["jes_up"]
        assert n["btag_down"] < n["nominal"] < n["btag_up"]


def test_a_dask_run_gives_the_same_histograms_as_one_process(samples, reference):
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        on_dask = ttbar.run(samples[2], client)
    assert (reference.engine, on_dask.engine) == ("coffea, one process", "coffea on Dask")
    assert ttbar.differences(reference.to_dict(), on_dask.to_dict()) == []


def test_differences_name_the_variation_that_differs(reference):
    a = reference.to_dict()
    b = copy.deepcopy(a)
    b["values"][5][1][0][ttbar.VARIATIONS.index("jes_up")] += 1
    assert ttbar.differences(a, b) == ["values of jes_up differ (by 1 at most)"]
