"""How data reaches a site follows the facility's data settings (`facility data`).

Specification:
- hierarchical: a read at T2_A is served by T2_A's cache, which fetched the file through the
  hub's regional cache, so the regional cache keeps a copy too;
- a lazy site cache keeps only the blocks a read asked for; a prefetching one, more (XCache
  prefetches while the file is open, so how much more depends on how long the read keeps it);
- with the WAN on, the kernel shapes the origin's link and each remote site's downlink at the
  rates asked for, and a cold read's bytes cross the origin's link; off, nothing is shaped;
- the site catalogue clients take follows the topology.

Each read is of a file under a fresh name (a hard link at the origin): cold for every cache.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from remote_jobqueue.data import (
    cache_environment,
    proxy_prefix,
    to_url,
    write_proxy_plugin_conf,
)
from rjq_facility import data_paths, dataset, lifecycle, wan, xrootd
from rjq_facility.config import FacilityConfig

from .test_xrootd import probe

pytestmark = pytest.mark.integration

BLOCK = 1 << 20  # pfc.blocksize


@pytest.fixture(scope="module")
def settings(facility: FacilityConfig) -> Iterator[FacilityConfig]:
    """The facility as these tests change it; put back as it was afterwards."""
    before = asdict(data_paths.load(facility))
    yield facility
    lifecycle.set_data_paths(facility, log=lambda *_: None, **before)
    assert asdict(data_paths.load(facility)) == before


@pytest.fixture
def fresh(facility: FacilityConfig) -> Iterator[Callable[[], str]]:
    """Make dataset files under names no cache has seen; removed, with the caches' copies."""
    data = xrootd.origin_data_dir(facility)
    names: list[str] = []

    def make() -> str:
        names.append(f"test-data-paths-{secrets.token_hex(4)}")
        source = dataset.DATASET_LFNS[0]
        lfn = f"/store/{names[-1]}/{Path(source).name}"
        (data / lfn.lstrip("/")).parent.mkdir(parents=True)
        os.link(data / source.lstrip("/"), data / lfn.lstrip("/"))
        return lfn

    yield make
    for name in names:
        for server in xrootd.servers(facility):
            for path in server.data_dir.rglob(name):
                shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fresh_lfn(fresh: Callable[[], str]) -> str:
    return fresh()


def cached(cfg: FacilityConfig, cache: str, lfn: str) -> Path:
    """Where ``cache`` keeps ``lfn``, however it was named (forwarded URLs keep the origin)."""
    (server,) = [s for s in xrootd.servers(cfg) if s.name == cache]
    found = [p for p in server.data_dir.rglob(Path(lfn).name) if lfn.lstrip("/") in str(p)]
    assert found, f"{cache} holds no copy of {lfn}"
    return found[0]


def stored(path: Path) -> int:
    """Bytes of ``path`` on disk: a cache writes the blocks it has into a sparse file."""
    return path.stat().st_blocks * 512


#: Reads a URL to its end with the XRootD client; prints the bytes read.
READ_WHOLE = """
import sys
from XRootD import client
handle = client.File()
status, _ = handle.open(sys.argv[1])
assert status.ok, status.message
offset = 0
while True:
    status, chunk = handle.read(offset, 8 << 20)
    assert status.ok, status.message
    if not chunk:
        break
    offset += len(chunk)
print(offset)
"""


def read_whole(url: str) -> int:
    """Read ``url`` to its end (explicit URL, no proxy plugin) in a process of its own: the
    XRootD client reads its plugin settings once per process, and this one must not hold
    them for the other tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRD_", "XROOT_"))}
    done = subprocess.run(
        [sys.executable, "-c", READ_WHOLE, url], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{url}: {done.stderr}"
    return int(done.stdout)


def site_probe(cfg: FacilityConfig, lfn: str, cache: str, tmp_path: Path) -> dict:
    env = cache_environment(cache, write_proxy_plugin_conf(tmp_path / "plugins"))
    return probe(to_url(lfn, cfg.origin_url), env, netns=cfg.site("T2_A").netns)


def test_a_hierarchy_reads_through_the_regional_cache(
    settings: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    lifecycle.set_data_paths(settings, log=lambda *_: None, topology="hierarchical", lazy=())
    (site,) = [s for n, s in lifecycle.site_catalogue(settings).items() if n == "T2_A"]
    chain = site["cache"]
    assert chain == f"{settings.cache_url_for('T2_A')}//{settings.hub_cache_url}"
    result = site_probe(settings, fresh_lfn, chain, tmp_path)
    assert result["data_server"] == settings.cache_url_for("T2_A")
    assert result["events"] > 0
    assert cached(settings, "cache-T2_A", fresh_lfn).exists()
    assert cached(settings, "cache-hub", fresh_lfn).exists()  # it came through the regional


def test_a_file_warm_at_the_regional_cache_does_not_cross_the_origins_link_again(
    settings: FacilityConfig, fresh: Callable[[], str], tmp_path: Path
) -> None:
    """What the hub's cache got for the notebook serves T2_A's cache too (one name for both)."""
    lifecycle.set_data_paths(settings, log=lambda *_: None, topology="hierarchical", lazy=())
    lfn = fresh()
    size = (xrootd.origin_data_dir(settings) / lfn.lstrip("/")).stat().st_size
    # The notebook side reads the whole file through the hub's cache first.
    assert (
        read_whole(proxy_prefix(settings.hub_cache_url) + to_url(lfn, settings.origin_url)) == size
    )
    assert stored(cached(settings, "cache-hub", lfn)) >= size
    before = wan.sent_bytes(settings)
    chain = data_paths.cache_for(settings, "T2_A", "hierarchical")
    assert site_probe(settings, lfn, chain, tmp_path)["data_server"] == settings.cache_url_for(
        "T2_A"
    )
    time.sleep(2)  # T2_A's cache prefetches while the read has the file open, and a bit after
    after = wan.sent_bytes(settings)
    assert after["origin"] - before["origin"] < BLOCK  # control traffic only
    # yet what T2_A's cache keeps entered T2_A
    assert after["T2_A"] - before["T2_A"] >= stored(cached(settings, "cache-T2_A", lfn)) > 0


def test_a_lazy_site_cache_keeps_only_what_was_read(
    settings: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    lifecycle.set_data_paths(settings, log=lambda *_: None, topology="near-site",
                             lazy=("cache-T2_A",))  # fmt: skip
    size = (xrootd.origin_data_dir(settings) / fresh_lfn.lstrip("/")).stat().st_size
    assert size > 8 * BLOCK
    site_probe(settings, fresh_lfn, settings.cache_url_for("T2_A"), tmp_path)
    time.sleep(2)  # what a prefetch would have fetched by now
    kept = stored(cached(settings, "cache-T2_A", fresh_lfn))
    assert 0 < kept <= 4 * BLOCK, f"a lazy cache kept {kept} of {size} bytes"


def test_a_prefetching_site_cache_fetches_the_whole_file(
    settings: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    lifecycle.set_data_paths(settings, log=lambda *_: None, topology="near-site", lazy=())
    size = (xrootd.origin_data_dir(settings) / fresh_lfn.lstrip("/")).stat().st_size
    site_probe(settings, fresh_lfn, settings.cache_url_for("T2_A"), tmp_path)
    time.sleep(2)  # as long as the lazy cache is given
    kept = stored(cached(settings, "cache-T2_A", fresh_lfn))
    # The same read leaves a lazy cache at most 4 blocks (the test above).
    assert kept >= 8 * BLOCK, f"a prefetching cache kept {kept} of {size} bytes"


def test_the_wan_shapes_each_link_and_a_cold_read_crosses_the_origins(
    settings: FacilityConfig, fresh_lfn: str, tmp_path: Path
) -> None:
    status = lifecycle.set_data_paths(settings, log=lambda *_: None, topology="near-site",
                                      lazy=(), wan=True, origin_rate="400mbit")  # fmt: skip
    links = {"origin", *(s.name for s in settings.sites if s.private)}
    assert set(status["shaped"]) == links
    assert status["shaped"]["origin"] == "400mbit"
    assert {status["shaped"][name] for name in links - {"origin"}} == {"1000mbit"}
    before = wan.sent_bytes(settings)
    site_probe(settings, fresh_lfn, settings.cache_url_for("T2_A"), tmp_path)
    time.sleep(2)  # the cache's prefetch, still in flight
    sent = {link: count - before[link] for link, count in wan.sent_bytes(settings).items()}
    kept = stored(cached(settings, "cache-T2_A", fresh_lfn))
    assert kept >= 8 * BLOCK  # prefetched well past what the probe read
    assert sent["origin"] >= kept, f"the origin's link carried {sent['origin']} of {kept} bytes"
    assert sent["T2_A"] >= kept  # and into the site, to its cache
    assert sent["T2_B"] < BLOCK  # another site's link carried none of it
    off = lifecycle.set_data_paths(settings, log=lambda *_: None, wan=False)
    assert off["shaped"] == dict.fromkeys(links)
