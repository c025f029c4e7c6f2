"""Where a random cluster landed, read at the site, and its workers pinned there.

Specification: the bundle reads ``SiteName`` from the machine ad HTCondor gives the job; the
landed candidate's requirements and cache become its workers'; a site that is no candidate is
an error that says what to check; a cluster that named its site is left as it is.
"""

from __future__ import annotations

import pytest

from remote_jobqueue.bundle.placement import machine_site_name, pin_to_landed_site
from remote_jobqueue.spec import BundleSpec, WorkerSpec

CANDIDATES = {
    "T2_A": {"requirements": 'TARGET.SiteName == "T2_A"', "environment": {"RJQ_XROOTD_CACHE": "a"}},
    "T2_B": {"requirements": 'TARGET.SiteName == "T2_B"', "environment": {}},
}


def _random_spec() -> BundleSpec:
    worker = WorkerSpec(requirements="(A) || (B)", environment={"PATH": "/bin"})
    return BundleSpec("rjq-x", "random", worker, candidates=CANDIDATES)


def test_the_site_name_comes_from_the_jobs_machine_ad(tmp_path):
    ad = tmp_path / ".machine.ad"
    ad.write_text('Cpus = 8\nSiteName = "T2_B"\nName = "slot1@t2_b"\n')
    assert machine_site_name(ad) == "T2_B"
    assert machine_site_name(tmp_path / "missing") is None


def test_workers_get_the_landed_sites_requirements_and_cache():
    spec = pin_to_landed_site(_random_spec(), "T2_A")
    assert spec.site == "T2_A" and spec.candidates == {}
    assert spec.worker.requirements == 'TARGET.SiteName == "T2_A"'
    assert spec.worker.environment == {"PATH": "/bin", "RJQ_XROOTD_CACHE": "a"}


def test_a_site_that_is_no_candidate_says_what_to_check():
    with pytest.raises(RuntimeError, match=r"none of the candidates \(T2_A, T2_B\)"):
        pin_to_landed_site(_random_spec(), "T3_ELSEWHERE")


def test_a_cluster_that_named_its_site_is_not_moved():
    spec = BundleSpec("rjq-x", "T2_A", WorkerSpec(requirements="A"))
    assert pin_to_landed_site(spec, "T2_B") is spec
