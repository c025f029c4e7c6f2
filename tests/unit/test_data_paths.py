"""How data reaches the sites is one setting of the facility, and the caches follow it.

Specification:
- ``origin`` gives sites no cache, ``near-site`` their nearest one, ``hierarchical`` a site
  cache that reads through the hub's regional cache (a chain the proxy plugin prefixes whole);
- a lazy cache turns XCache's whole-file prefetch off, the others keep it;
- a site cache may forward to the regional cache as well as to the origin;
- servers keep a MAC of their address and make no reverse lookups;
- the settings survive a reload, and unreadable ones give the defaults (with a warning);
- an unknown topology or cache, or a rate tc would misread, is refused by name.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from remote_jobqueue.data import cache_environment
from rjq_facility import data_paths, xrootd
from rjq_facility.config import FacilityConfig
from rjq_facility.data_paths import DataPaths


@pytest.fixture
def cfg(tmp_path) -> FacilityConfig:
    return replace(FacilityConfig(), state_dir=tmp_path)


def test_each_topology_gives_the_sites_their_caches(cfg: FacilityConfig) -> None:
    site_cache = cfg.cache_url_for("T2_A")
    assert data_paths.cache_for(cfg, "T2_A", "origin") is None
    assert data_paths.cache_for(cfg, "T2_A", "near-site") == site_cache
    chain = data_paths.cache_for(cfg, "T2_A", "hierarchical")
    assert chain == f"{site_cache}//{cfg.hub_cache_url}"
    # A site without a cache of its own reads the regional one in both cache topologies.
    for topology in ("near-site", "hierarchical"):
        assert data_paths.cache_for(cfg, "T2_B", topology) == cfg.hub_cache_url


def test_a_hierarchy_is_the_site_cache_first_then_the_regional_one(
    cfg: FacilityConfig, tmp_path
) -> None:
    chain = data_paths.cache_for(cfg, "T2_A", "hierarchical")
    site = cfg.site("T2_A").cache_address
    assert cache_environment(chain, tmp_path)["XROOT_PROXY"] == (
        f"root://{site}:{cfg.cache_port}//root://{cfg.hub_cache_address}:{cfg.cache_port}//"
    )


def test_a_lazy_cache_does_not_prefetch_and_the_others_do(cfg: FacilityConfig) -> None:
    data_paths.save(cfg, DataPaths(lazy=("cache-T2_A",)))
    configs = {server.name: server.config().splitlines() for server in xrootd.servers(cfg)}
    assert "pfc.prefetch 0" in configs["cache-T2_A"]
    assert not any(line.startswith("pfc.prefetch") for line in configs["cache-hub"])


def test_a_site_cache_may_forward_to_the_regional_cache(cfg: FacilityConfig) -> None:
    site_cache = next(s for s in xrootd.servers(cfg) if s.name == "cache-T2_A")
    permits = [line for line in site_cache.config().splitlines() if line.startswith("pss.permit")]
    assert permits == [f"pss.permit {cfg.origin_address}", f"pss.permit {cfg.hub_cache_address}"]


def test_unreadable_settings_give_the_defaults_so_down_still_works(cfg: FacilityConfig) -> None:
    data_paths.settings_file(cfg).write_text('{"topology": "near-si')
    with pytest.warns(UserWarning, match="ignoring .*data-paths.json"):
        assert data_paths.load(cfg) == DataPaths()


def test_settings_survive_a_reload(cfg: FacilityConfig) -> None:
    assert data_paths.load(cfg) == DataPaths()  # nothing saved: the defaults, no WAN
    paths = DataPaths().with_changes(topology="hierarchical", lazy=["cache-hub"], wan=True)
    data_paths.save(cfg, paths)
    assert data_paths.load(cfg) == paths
    assert paths.with_changes(topology=None).topology == "hierarchical"  # None: unchanged


def test_an_unknown_topology_cache_or_rate_is_refused_by_name(cfg: FacilityConfig) -> None:
    with pytest.raises(ValueError, match="unknown topology 'regional'; one of: origin"):
        DataPaths(topology="regional")
    # tc would read "200mbps" as 200 megabytes per second.
    with pytest.raises(ValueError, match="origin rate '200mbps' is not a rate like 200mbit"):
        DataPaths(origin_rate="200mbps")
    with pytest.raises(ValueError, match="no such cache: cache-T2_B; the facility has: "):
        data_paths.save(cfg, DataPaths(lazy=("cache-T2_B",)))


def test_servers_keep_their_mac_and_do_no_reverse_lookups(cfg: FacilityConfig) -> None:
    """A restarted cache is reachable at once (its neighbours' ARP entries stay right), and no
    client waits for a DNS server the sites do not have."""
    macs = {server.name: server.mac for server in xrootd.servers(cfg)}
    assert macs["cache-T2_A"] == "02:52:0a:d5:4e:0c"  # 10.213.78.12
    assert len(set(macs.values())) == len(macs)
    for server in xrootd.servers(cfg):
        assert "xrd.network nodnr" in server.config().splitlines()
