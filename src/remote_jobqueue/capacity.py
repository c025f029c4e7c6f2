"""What a site's collector says about its machines: can the site ever run this cluster's jobs
(asked before anything is submitted, so impossible resources fail at once instead of idling
forever), and how many cores are free right now (shown in the lab's site picker)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dask.utils import format_bytes

from .errors import ImpossibleResources
from .spec import WorkerSpec

logger = logging.getLogger("remote_jobqueue")


def _startd_ads(site: Any, projection: list[str], constraint: str = "true") -> list:
    """The site's machine (Startd) ads: those its jobs' requirements would match, and
    ``constraint``. Blocking: call it in a thread."""
    import htcondor2

    coll = htcondor2.Collector(site.collector) if site.collector else htcondor2.Collector()
    # In a collector query the machine ad is MY, not TARGET.
    requirements = (site.requirements or "true").replace("TARGET.", "MY.")
    return coll.query(
        htcondor2.AdTypes.Startd,
        constraint=f"({requirements}) && ({constraint})",
        projection=projection,
    )


async def free_cores(site: Any) -> int | None:
    """The cores of ``site``'s unclaimed slots (a partitionable slot offers what it has left),
    among the machines its jobs could run on; None when its collector cannot be asked, which
    a picker shows as unknown rather than as an error."""
    try:
        ads = await asyncio.to_thread(_startd_ads, site, ["State", "Cpus"], 'State == "Unclaimed"')
    except Exception as err:  # any failure to ask is "unknown", never the picker's error
        logger.info("free cores of site %s unknown: %s", site.name, err)
        return None
    return sum(int(ad.get("Cpus", 0)) for ad in ads if ad.get("State") == "Unclaimed")


async def check_fits(site: Any, worker: WorkerSpec, scheduler: tuple[int, int, int]) -> None:
    """Raise `ImpossibleResources` if no machine of ``site`` can run a worker job, or the
    scheduler job with (cpus, memory MB, disk KB) ``scheduler``."""
    from .schedd import ScheddUnreachable

    try:
        ads = await asyncio.to_thread(
            _startd_ads,
            site,
            ["TotalSlotCpus", "TotalSlotMemory", "Cpus", "Memory", "SiteName"],
        )
    except Exception as err:
        raise ScheddUnreachable(
            f"cannot reach the collector of site {site.name} at {site.collector}: {err}"
        ) from err
    if not ads:
        return  # the site may be joining; the idle watch will say so
    max_cpus = max(int(ad.get("TotalSlotCpus", ad.get("Cpus", 0))) for ad in ads)
    max_mem = max(int(ad.get("TotalSlotMemory", ad.get("Memory", 0))) for ad in ads)
    largest = f"the largest has {max_cpus} cores and {format_bytes(max_mem * 2**20)}"
    if worker.cores > max_cpus or worker.memory_mb > max_mem:
        raise ImpossibleResources(
            f"no machine at site {site.name} can run a worker job of {worker.cores} cores "
            f"and {format_bytes(worker.memory)}: {largest}. Ask for less per job and scale out "
            "instead."
        )
    _, sched_mem, _ = scheduler
    if sched_mem > max_mem:
        raise ImpossibleResources(
            f"no machine at site {site.name} can run the scheduler job with its resident "
            f"worker ({format_bytes(sched_mem * 2**20)}): {largest}. Ask for less memory "
            "per job, or pass resident_worker=False."
        )
