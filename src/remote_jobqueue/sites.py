"""The site catalogue: where clusters can run, from Dask config (`remote-jobqueue.sites`).

Each entry names the HTCondor collector and schedd that serve the site, the requirements that
keep jobs there, its nearest XRootD cache, and the gateway its bundles dial. Which keys a site
may have, and what they mean, is the schema's (`remote-jobqueue-schema.yaml`): an unknown key is
an error naming the key and the site. `"random"` picks a configured site; `"local"` runs the
same bundle as local processes.

`"random"` is HTCondor's choice, not ours: the scheduler job asks for any of the sites and
runs wherever a slot matches first (so never where none is free), and the bundle pins its
workers to the site it landed at (`bundle/placement.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import config
from .errors import RemoteJobqueueError, UnknownSite

LOCAL = "local"
RANDOM = "random"
RANDOM_LABEL = "HTCondor (random site)"


@dataclass(frozen=True)
class SiteSpec:
    """One site of the catalogue: its name, and a field for each site key of the schema."""

    name: str
    collector: str | None = None
    schedd: str | None = None
    requirements: str | None = None
    cache: str | None = None
    #: PEM of the CA of the storage the site's jobs read (token-protected reads, TLS).
    xrootd_ca: str | None = None
    gateway: str | None = None
    gateway_host_key: str | None = None
    image: str | None = None
    python: str | None = None
    label: str | None = None
    #: For ``random``: the sites it may land at (it is a choice HTCondor makes at match time).
    candidates: tuple[SiteSpec, ...] = ()

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    @property
    def is_random(self) -> bool:
        return bool(self.candidates)

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        if self.is_random:
            return RANDOM_LABEL
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
    """(value, label) pairs for a site picker: random, each HTCondor site, "Local"."""
    remote = [(n, s.display_name) for n, s in catalogue().items() if not s.is_local]
    return [(RANDOM, RANDOM_LABEL), *remote, (LOCAL, "Local")]


def resolve(name: str | None) -> SiteSpec:
    name = name or config.get("site")
    sites = catalogue()
    if name == RANDOM:
        return random_site(sites)
    if name not in sites:
        raise UnknownSite(name, sorted(sites))
    return sites[name]


#: What every candidate of ``random`` must share: the job is submitted once, to one schedd,
#: dials one gateway and runs one Python, before anyone knows where it lands.
_SHARED = ("collector", "schedd", "gateway", "gateway_host_key", "python", "image")


def random_site(sites: dict[str, SiteSpec]) -> SiteSpec:
    """The pseudo-site ``random``: any remote site of the catalogue, chosen at match time."""
    remote = [spec for name, spec in sorted(sites.items()) if not spec.is_local]
    if not remote:
        raise UnknownSite(RANDOM, list(sites))
    return random_among(remote)


def random_among(candidates: list[SiteSpec]) -> SiteSpec:
    """``random`` over ``candidates``: they must share one submission, and each must say by
    its requirements which machines are its own (else the job could land anywhere)."""
    shared = {}
    for key in _SHARED:
        values = {getattr(spec, key) for spec in candidates}
        if len(values) > 1:
            raise RemoteJobqueueError(
                f'site="random" needs sites that share one {key.replace("_", "-")}, and '
                f"{', '.join(s.name for s in candidates)} do not: name a site instead"
            )
        shared[key] = values.pop()
    unbounded = [spec.name for spec in candidates if not spec.requirements]
    if unbounded:
        raise RemoteJobqueueError(
            f'site="random" needs every site to have requirements, and {", ".join(unbounded)} '
            "has none: its jobs could run on any machine of the pool"
        )
    anywhere = " || ".join(f"({spec.requirements})" for spec in candidates)
    return SiteSpec(RANDOM, requirements=anywhere, candidates=tuple(candidates), **shared)
