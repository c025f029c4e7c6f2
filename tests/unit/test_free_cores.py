"""Free cores of a site, as the lab's site picker shows them, asked of a fake collector.

Specification: `free_cores(site)` sums ``Cpus`` of the site's unclaimed slots (a partitionable
slot's ``Cpus`` is what it has left), asks the site's own collector with the site's requirements
(``TARGET.`` read as ``MY.``, as `check_fits` does) and ``State == "Unclaimed"``, and is None
when the collector cannot be asked. The picker's "random site" offers what the sites that
answered have; a collector that does not answer in time is unknown, and the picker still opens.
"""

from __future__ import annotations

import threading
from typing import Any

import dask.config
import htcondor2
import pytest

from remote_jobqueue.capacity import free_cores
from remote_jobqueue.lab import choices
from remote_jobqueue.sites import SiteSpec

SITE = SiteSpec("T2_A", collector="collector-a:9618", requirements='(TARGET.SiteName == "T2_A")')


class FakeCollector:
    """Answers `query` with the ads given for its address; records what it was asked."""

    ads: dict[str | None, list[dict[str, Any]] | Exception] = {}
    asked: list[dict[str, Any]] = []
    hang: threading.Event | None = None

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def query(self, ad_type: Any, constraint: str, projection: list[str]) -> list[dict]:
        FakeCollector.asked.append(
            {"address": self.address, "type": ad_type, "constraint": constraint}
        )
        if FakeCollector.hang is not None:
            FakeCollector.hang.wait(5)
        answer = FakeCollector.ads[self.address]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture(autouse=True)
def collector(monkeypatch: pytest.MonkeyPatch) -> type[FakeCollector]:
    monkeypatch.setattr(htcondor2, "Collector", FakeCollector)
    FakeCollector.ads, FakeCollector.asked, FakeCollector.hang = {}, [], None
    return FakeCollector


async def test_free_cores_are_the_cpus_of_unclaimed_slots(collector) -> None:
    collector.ads["collector-a:9618"] = [
        {"State": "Unclaimed", "Cpus": 6},  # a partitionable slot with 6 cores left
        {"State": "Unclaimed", "Cpus": 2},
        {"State": "Claimed", "Cpus": 4},  # a dynamic slot: in use
    ]
    assert await free_cores(SITE) == 8


async def test_the_sites_collector_is_asked_with_its_requirements(collector) -> None:
    collector.ads["collector-a:9618"] = []
    assert await free_cores(SITE) == 0
    (asked,) = collector.asked
    assert asked["address"] == "collector-a:9618"
    assert asked["type"] == htcondor2.AdTypes.Startd
    assert asked["constraint"] == '((MY.SiteName == "T2_A")) && (State == "Unclaimed")'


async def test_a_site_without_requirements_asks_for_every_unclaimed_slot(collector) -> None:
    collector.ads["collector-b:9618"] = [{"State": "Unclaimed", "Cpus": 3}]
    assert await free_cores(SiteSpec("T2_B", collector="collector-b:9618")) == 3
    assert collector.asked[0]["constraint"] == '(true) && (State == "Unclaimed")'


async def test_an_unreachable_collector_is_unknown_not_an_error(collector) -> None:
    collector.ads["collector-a:9618"] = htcondor2.HTCondorException("Failed communication")
    assert await free_cores(SITE) is None


async def test_the_picker_offers_each_sites_free_cores_and_their_sum_for_random(
    collector,
) -> None:
    collector.ads["a:1"] = [{"State": "Unclaimed", "Cpus": 5}]
    collector.ads["b:1"] = RuntimeError("down")
    collector.ads["c:1"] = [{"State": "Unclaimed", "Cpus": 2}]
    catalogue = {name: {"collector": f"{name[-1].lower()}:1"} for name in ("T2_A", "T2_B", "T2_C")}
    with dask.config.set({"remote-jobqueue.sites": catalogue}):
        listed = (await choices.site_choices())["sites"]
    assert [(s["value"], s.get("free_cores", "-")) for s in listed] == [
        ("random", 7),
        ("T2_A", 5),
        ("T2_B", None),
        ("T2_C", 2),
        ("local", "-"),
    ]


async def test_random_is_unknown_when_no_site_answered(collector) -> None:
    collector.ads["a:1"] = RuntimeError("down")
    with dask.config.set({"remote-jobqueue.sites": {"T2_A": {"collector": "a:1"}}}):
        listed = (await choices.site_choices())["sites"]
    assert listed[0] == {"value": "random", "label": "HTCondor (random site)", "free_cores": None}


async def test_without_remote_sites_the_picker_offers_local_only() -> None:
    with dask.config.set({"remote-jobqueue.sites": {}}):
        listed = (await choices.site_choices())["sites"]
    assert listed == [{"value": "local", "label": "Local"}]


async def test_a_collector_that_does_not_answer_in_time_is_unknown(
    collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(choices, "FREE_CORES_TIMEOUT", 0.2)
    collector.hang = threading.Event()
    collector.ads["a:1"] = [{"State": "Unclaimed", "Cpus": 5}]
    try:
        with dask.config.set({"remote-jobqueue.sites": {"T2_A": {"collector": "a:1"}}}):
            listed = (await choices.site_choices())["sites"]
    finally:
        collector.hang.set()
    assert listed[1] == {"value": "T2_A", "label": "HTCondor-T2_A", "free_cores": None}
