"""Bad input fails at construction, at once, with a message that says what to do.

Specification: an unknown site names the known ones; impossible worker sizes are refused
before anything is submitted; defaults come from Dask config; HTCondor's quoting is right.
"""

from __future__ import annotations

import dask.config
import pytest
from hypothesis import given
from hypothesis import strategies as st

from remote_jobqueue import (
    ImpossibleResources,
    InvalidSettings,
    RemoteHTCondorCluster,
    RemoteJobqueueError,
    UnknownSite,
    sites,
)
from remote_jobqueue.spec import condor_arguments


def test_unknown_site_names_the_known_ones():
    sites_cfg = {"remote-jobqueue.sites": {"T2_A": {"schedd": "s"}}}
    with dask.config.set(sites_cfg), pytest.raises(UnknownSite, match="T2_A") as info:
        RemoteHTCondorCluster(site="T2_NOWHERE")
    assert "T2_NOWHERE" in str(info.value)


def test_random_leaves_the_choice_to_htcondor_among_the_remote_sites():
    catalogue = {
        "T2_A": {"schedd": "s", "requirements": 'TARGET.SiteName == "T2_A"'},
        "T2_B": {"schedd": "s", "requirements": 'TARGET.SiteName == "T2_B"'},
    }
    with dask.config.set({"remote-jobqueue.sites": catalogue}):
        random_site = sites.resolve("random")
    assert [site.name for site in random_site.candidates] == ["T2_A", "T2_B"]
    assert random_site.requirements == (
        '(TARGET.SiteName == "T2_A") || (TARGET.SiteName == "T2_B")'
    )
    assert random_site.schedd == "s" and random_site.display_name == "HTCondor (random site)"


def test_random_refuses_a_site_without_requirements():
    catalogue = {"T2_A": {"requirements": "A"}, "T2_B": {}}
    with (
        dask.config.set({"remote-jobqueue.sites": catalogue}),
        pytest.raises(RemoteJobqueueError, match="T2_B has none"),
    ):
        sites.resolve("random")


def test_a_detached_local_cluster_is_refused_at_once():
    with pytest.raises(RemoteJobqueueError, match="needs a remote site"):
        RemoteHTCondorCluster(site="local", shutdown_on_close=False)


def test_random_refuses_sites_that_cannot_share_one_submission():
    catalogue = {"T2_A": {"schedd": "a", "requirements": "A"}, "T2_B": {"schedd": "b"}}
    with (
        dask.config.set({"remote-jobqueue.sites": catalogue}),
        pytest.raises(RemoteJobqueueError, match="share one schedd"),
    ):
        sites.resolve("random")


async def test_a_random_clusters_bundle_knows_every_candidate_and_its_cache():
    catalogue = {
        "T2_A": {"python": "/p", "requirements": "A", "cache": "root://cache-a:1"},
        "T2_B": {"python": "/p", "requirements": "B"},
    }
    with dask.config.set({"remote-jobqueue.sites": catalogue, "remote-jobqueue.gateway": "g:1"}):
        # Constructed inside a running loop and never awaited: nothing is submitted.
        spec = RemoteHTCondorCluster(site="random", asynchronous=True).bundle_spec()
    assert set(spec.candidates) == {"T2_A", "T2_B"}
    assert spec.candidates["T2_A"]["requirements"] == "A"
    assert spec.candidates["T2_A"]["environment"]["RJQ_XROOTD_CACHE"] == "root://cache-a:1"
    assert spec.candidates["T2_B"]["environment"] == {}
    assert spec.worker.requirements == "(A) || (B)"


def test_site_choices_read_as_in_the_notebook():
    with dask.config.set({"remote-jobqueue.sites": {"T2_A": {}}}):
        assert sites.choices() == [
            ("random", "HTCondor (random site)"),
            ("T2_A", "HTCondor-T2_A"),
            ("local", "Local"),
        ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"memory": "1 MiB"}, "too small"),
        ({"cores": 2, "processes": 3}, "processes must be between"),
    ],
)
def test_impossible_worker_sizes_are_refused(kwargs, message):
    with pytest.raises(ImpossibleResources, match=message):
        RemoteHTCondorCluster(site="local", **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cores": 0}, r"remote-jobqueue\.cores = 0 is refused: must be at least 1"),
        ({"processes": 0}, r"remote-jobqueue\.processes = 0 is refused: must be at least 1"),
        ({"lease": -5}, r"remote-jobqueue\.lease = -5 is refused"),
        ({"memory": "plenty"}, r"remote-jobqueue\.memory = 'plenty' is refused"),
    ],
)
def test_settings_outside_the_schema_are_refused_before_anything_starts(kwargs, message):
    with pytest.raises(InvalidSettings, match=message):
        RemoteHTCondorCluster(site="local", **kwargs)


def test_a_remote_site_without_gateway_is_refused():
    sites_cfg = {"remote-jobqueue.sites": {"T2_A": {"schedd": "s", "python": "/usr/bin/python3"}}}
    with (
        dask.config.set(sites_cfg),
        pytest.raises(RemoteJobqueueError, match="site T2_A has no gateway configured") as err,
    ):
        RemoteHTCondorCluster(site="T2_A")
    assert "set remote-jobqueue.gateway or the site's gateway" in str(err.value)


async def test_defaults_come_from_dask_config():
    site = {"schedd": "s", "collector": "c:9618", "gateway": "g:22", "python": "/sw/python"}
    settings = {
        "remote-jobqueue.sites": {"T2_A": site},
        "remote-jobqueue.site": "T2_A",
        "remote-jobqueue.cores": 3,
        "remote-jobqueue.memory": "6 GiB",
        "remote-jobqueue.processes": 3,
        "remote-jobqueue.disk": "5 GiB",
        "remote-jobqueue.lease": 77,
    }
    with dask.config.set(settings):
        # Constructed inside a running loop and never awaited: nothing is submitted.
        from_config = RemoteHTCondorCluster(asynchronous=True)
        keywords = RemoteHTCondorCluster(
            site="local", cores=2, memory="4 GiB", processes=1, lease=5, asynchronous=True
        )
    spec = from_config.worker_spec
    assert from_config.site.name == "T2_A"
    assert (spec.cores, spec.memory_mb, spec.processes, spec.disk) == (3, 6144, 3, 5 * 2**30)
    assert spec.threads_per_process == 1
    assert from_config.lease == 77
    # keyword arguments win over the config
    spec = keywords.worker_spec
    assert keywords.site.name == "local"
    assert (spec.cores, spec.memory_mb, spec.processes, spec.disk) == (2, 4096, 1, 5 * 2**30)
    assert keywords.lease == 5


def _parse_condor_arguments(text: str) -> list[str]:
    """A reference reader of HTCondor's new argument syntax (as the manual describes it)."""
    assert text[0] == text[-1] == '"'
    body, args, cur, quoted, i, started = text[1:-1], [], "", False, 0, False
    while i < len(body):
        c = body[i]
        if c == '"' and body[i + 1 : i + 2] == '"':
            cur, i, started = cur + '"', i + 2, True
            continue
        if c == "'":
            if quoted and body[i + 1 : i + 2] == "'":
                cur, i = cur + "'", i + 2
                continue
            quoted, started = not quoted, True
        elif c == " " and not quoted:
            if started:
                args.append(cur)
            cur, started = "", False
        else:
            cur, started = cur + c, True
        i += 1
    if started:
        args.append(cur)
    return args


@given(
    st.lists(
        st.text(alphabet=st.characters(codec="ascii", blacklist_categories=("Cc",)), max_size=12),
        max_size=5,
    )
)
def test_condor_arguments_keep_every_argument_intact(argv):
    assert _parse_condor_arguments(condor_arguments(argv)) == argv


_SITE = {
    "remote-jobqueue.sites": {
        "T2_A": {"schedd": "s", "collector": "c:9618", "gateway": "g:22", "python": "/sw/python"}
    }
}


@pytest.mark.parametrize(
    "resident, expected",
    [
        # The scheduler's own core and 1 GiB, plus the share of the worker it runs itself.
        (True, {"request_cpus": "2", "request_memory": str(1024 + 3072)}),
        (False, {"request_cpus": "1", "request_memory": "1024"}),
    ],
)
async def test_the_scheduler_job_holds_a_resident_workers_resources(resident, expected):
    with dask.config.set(_SITE):
        # Constructed inside a running loop and never awaited: nothing is submitted.
        cluster = RemoteHTCondorCluster(
            site="T2_A", cores=2, memory="3 GiB", resident_worker=resident, asynchronous=True
        )
    desc = cluster.scheduler_job_description()
    assert {k: desc[k] for k in expected} == expected
    assert cluster.bundle_spec().resident_worker is resident


def test_a_remote_site_that_names_no_python_is_refused_at_once():
    """The client's interpreter path means nothing on a worker node: no silent default."""
    sites_cfg = {"remote-jobqueue.sites": {"T2_A": {"schedd": "s", "gateway": "g:22"}}}
    with (
        dask.config.set(sites_cfg),
        pytest.raises(RemoteJobqueueError, match="site T2_A does not say which Python"),
    ):
        RemoteHTCondorCluster(site="T2_A", quiet=True)


async def test_the_sites_python_is_what_jobs_run_unless_one_is_chosen():
    with dask.config.set(_SITE):
        # Constructed inside a running loop and never awaited: nothing is submitted.
        cluster = RemoteHTCondorCluster(site="T2_A", asynchronous=True)
        assert cluster.worker_spec.python == "/sw/python"
        chosen = RemoteHTCondorCluster(site="T2_A", python="/opt/py/bin/python", asynchronous=True)
        assert chosen.worker_spec.python == "/opt/py/bin/python"
