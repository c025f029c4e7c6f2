"""Can the site ever run this cluster's jobs? Asked of its collector before anything is
submitted, so impossible resources fail at once instead of idling forever."""

from __future__ import annotations

import asyncio
from typing import Any

from dask.utils import format_bytes

from .errors import ImpossibleResources
from .spec import WorkerSpec


async def check_fits(site: Any, worker: WorkerSpec, scheduler: tuple[int, int, int]) -> None:
    """Raise `ImpossibleResources` if no machine of ``site`` can run a worker job, or the
    scheduler job with (cpus, memory MB, disk KB) ``scheduler``."""
    import htcondor2

    from .schedd import ScheddUnreachable

    def query() -> list:
        coll = htcondor2.Collector(site.collector) if site.collector else htcondor2.Collector()
        return coll.query(
            htcondor2.AdTypes.Startd,
            # In a collector query the machine ad is MY, not TARGET.
            constraint=(site.requirements or "true").replace("TARGET.", "MY."),
            projection=["TotalSlotCpus", "TotalSlotMemory", "Cpus", "Memory", "SiteName"],
        )

    try:
        ads = await asyncio.to_thread(query)
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
