"""What the "Create new cluster" dialog offers: the sites, each with its free cores, and the
defaults of its fields, from the site catalogue and Dask config (`remote-jobqueue.*`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dask.utils import format_bytes

from .. import config, sites
from ..capacity import free_cores

logger = logging.getLogger("remote_jobqueue")

#: A collector that does not answer in this time is shown as unknown: the dialog must open.
FREE_CORES_TIMEOUT = 5.0


async def _free_cores_or_none(site: sites.SiteSpec) -> int | None:
    try:
        return await asyncio.wait_for(free_cores(site), FREE_CORES_TIMEOUT)
    except TimeoutError:
        logger.info("free cores of site %s unknown: its collector did not answer", site.name)
        return None


def _random_free(free: list[int | None]) -> int | None:
    """Free cores for "random site": those of every site that said; unknown if none did."""
    known = [n for n in free if n is not None]
    return sum(known) if known else None


async def site_choices() -> dict[str, Any]:
    """The dialog's choices: ``sites`` ("random" first when there is a remote site, each
    remote site by its label, "Local" last) and ``defaults`` for site, cores, memory, image.
    Collectors are asked all at once."""
    remote = [s for s in sites.catalogue().values() if not s.is_local]
    free = await asyncio.gather(*(_free_cores_or_none(s) for s in remote))
    entries: list[dict[str, Any]] = []
    if remote:
        entries.append(
            {"value": sites.RANDOM, "label": sites.RANDOM_LABEL, "free_cores": _random_free(free)}
        )
    entries += [
        {"value": s.name, "label": s.display_name, "free_cores": n}
        for s, n in zip(remote, free, strict=True)
    ]
    entries.append({"value": sites.LOCAL, "label": "Local"})
    memory = config.get("memory")
    return {
        "sites": entries,
        "defaults": {
            "site": config.get("site"),
            "cores": config.get("cores"),
            "memory": memory if isinstance(memory, str) else format_bytes(int(memory)),
            "image": config.get("image"),
        },
    }
