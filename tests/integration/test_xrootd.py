"""Reads go through the nearest XRootD cache: the hub's for the notebook, a site's own at T2_A.

Each probe runs in a subprocess (inside the site's network namespace for remote sites), because
the XRootD client only reads the proxy plugin settings when its library loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remote_jobqueue.data import cache_environment, to_url, write_proxy_plugin_conf
from rjq_facility import dataset, xrootd
from rjq_facility.config import FacilityConfig

pytestmark = pytest.mark.integration

ALL_SITES = [site.name for site in FacilityConfig().sites]


def probe(
    url: str, extra_env: dict[str, str] | None = None, netns: str | None = None
) -> dict[str, object]:
    """Run ``python -m remote_jobqueue.data probe`` with exactly the XRootD settings given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRD_", "XROOT_"))}
    env |= {"XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "5", **(extra_env or {})}
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "remote_jobqueue.data", "probe", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"probe failed: {proc.stdout} {proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_proxy_plugin_conf(tmp_path_factory.mktemp("xrdplugins"))


@pytest.fixture(scope="module")
def files(facility: FacilityConfig) -> dict[str, int]:
    """LFN -> number of events, as the origin's dataset manifest says."""
    manifest = dataset.read_manifest(xrootd.origin_data_dir(facility))
    assert manifest is not None, "the facility has no dataset"
    return {entry["lfn"]: entry["events"] for entry in manifest["files"]}


def cached_copy(cfg: FacilityConfig, server_name: str, lfn: str) -> Path:
    (server,) = [s for s in xrootd.servers(cfg) if s.name == server_name]
    return server.data_dir / lfn.lstrip("/")


def test_all_servers_listen(facility: FacilityConfig) -> None:
    state = xrootd.status(facility)
    assert {name for name, s in state.items() if s["listening"]} == {
        s.name for s in xrootd.servers(facility)
    }


def test_hub_read_goes_through_hub_cache(
    facility: FacilityConfig, plugin_dir: Path, files: dict[str, int]
) -> None:
    lfn = dataset.DATASET_LFNS[0]
    env = cache_environment(facility.hub_cache_url, plugin_dir)
    result = probe(to_url(lfn, facility.origin_url), env)
    assert result["data_server"] == facility.hub_cache_url
    assert result["events"] == files[lfn]
    # The cache kept a copy (so it cached, not just forwarded).
    assert cached_copy(facility, "cache-hub", lfn).exists()


def test_direct_read_is_served_by_origin(facility: FacilityConfig, files: dict[str, int]) -> None:
    lfn = dataset.DATASET_LFNS[1]
    result = probe(to_url(lfn, facility.origin_url))
    assert result["data_server"] == facility.origin_url
    assert result["events"] == files[lfn]


@pytest.mark.parametrize("site_name", ALL_SITES)
def test_site_read_goes_through_its_nearest_cache(
    facility: FacilityConfig, plugin_dir: Path, files: dict[str, int], site_name: str
) -> None:
    site = facility.site(site_name)
    lfn = dataset.DATASET_LFNS[2]
    cache = facility.cache_url_for(site.name)
    env = cache_environment(cache, plugin_dir)
    result = probe(to_url(lfn, facility.origin_url), env, netns=site.netns)
    assert result["data_server"] == cache
    assert result["events"] == files[lfn]
    if site.own_cache:
        assert cache != facility.hub_cache_url
        assert cached_copy(facility, f"cache-{site.name}", lfn).exists()
