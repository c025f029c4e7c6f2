"""Where a ``site="random"`` cluster landed, and its workers pinned there.

As HTCondor does it (and the INFN facility): the scheduler job goes out with the union of the
candidate sites' requirements, so it runs wherever a slot matches first; the bundle reads the
site from its own machine ad and gives its workers that site's requirements and nearest cache.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from ..spec import BundleSpec

_SITE_NAME = re.compile(r'^SiteName\s*=\s*"([^"]*)"', re.MULTILINE)


def machine_site_name(machine_ad: Path | None = None) -> str | None:
    """``SiteName`` of the slot we run in (HTCondor writes the machine ad into the job's
    scratch directory and names it in ``_CONDOR_MACHINE_AD``)."""
    path = machine_ad or Path(os.environ.get("_CONDOR_MACHINE_AD", ".machine.ad"))
    try:
        found = _SITE_NAME.search(path.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def pin_to_landed_site(spec: BundleSpec, site_name: str | None) -> BundleSpec:
    """``spec`` with its site and its workers' requirements and environment those of the
    candidate it landed at; unchanged for a cluster that named its site."""
    if not spec.candidates:
        return spec
    if site_name not in spec.candidates:
        known = ", ".join(sorted(spec.candidates))
        raise RuntimeError(
            f"the scheduler job runs at site {site_name!r}, which is none of the candidates "
            f"({known}): check the sites' requirements in the catalogue"
        )
    chosen = spec.candidates[site_name]
    worker = dataclasses.replace(
        spec.worker,
        requirements=chosen.get("requirements"),
        environment={**spec.worker.environment, **chosen.get("environment", {})},
    )
    return dataclasses.replace(spec, site=site_name, worker=worker, candidates={})
