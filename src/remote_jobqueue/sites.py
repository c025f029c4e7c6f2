"""The site catalogue: where clusters can run, from Dask config (`remote-jobqueue.sites`).

Each entry names the HTCondor collector and schedd that serve the site, the requirements that
keep jobs there, its nearest XRootD cache, and the gateway its bundles dial. Which keys a site
may have, and what they mean, is the schema's (`remote-jobqueue-schema.yaml`): an unknown key is
an error naming the key and the site. `"random"` picks a configured site; `"local"` runs the
same bundle as local processes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import config
from .errors import UnknownSite

LOCAL = "local"
RANDOM = "random"


@dataclass(frozen=True)
class SiteSpec:
    """One site of the catalogue: its name, and a field for each site key of the schema."""

    name: str
    collector: str | None = None
    schedd: str | None = None
    requirements: str | None = None
    cache: str | None = None
    gateway: str | None = None
    gateway_host_key: str | None = None
    image: str | None = None
    python: str | None = None
    label: str | None = None

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        return "Local" if self.is_local else f"HTCondor-{self.name}"


def catalogue() -> dict[str, SiteSpec]:
    """Every configured site, plus ``local``; `InvalidSettings` if the schema refuses a site."""
    sites = {
        name: SiteSpec(name, **{key.replace("-", "_"): value for key, value in entry.items()})
        for name, entry in config.site_catalogue().items()
    }
    sites.setdefault(LOCAL, SiteSpec(LOCAL, label="Local"))
    return sites


def choices() -> list[tuple[str, str]]:
    """(value, label) pairs for a site picker: "random site", each HTCondor site, "Local"."""
    remote = [(n, s.display_name) for n, s in catalogue().items() if not s.is_local]
    return [(RANDOM, "random site"), *remote, (LOCAL, "Local")]


def resolve(name: str | None, rng: random.Random | None = None) -> SiteSpec:
    name = name or config.get("site")
    sites = catalogue()
    if name == RANDOM:
        remote = sorted(n for n, s in sites.items() if not s.is_local)
        if not remote:
            raise UnknownSite(RANDOM, list(sites))
        name = (rng or random).choice(remote)
    if name not in sites:
        raise UnknownSite(name, sorted(sites))
    return sites[name]
