"""What the development facility looks like: addresses, ports, sites, users and directories.

One frozen description feeds every part (network, pool, XRootD, issuer), so `up`, `down`,
`status` and `env` always agree on what exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Where provisioned root file systems are kept between runs, keyed by their configuration.
CACHE_DIR = Path(os.environ.get("RJQ_CACHE_DIR", "/var/cache/remote-jobqueue"))
#: Where a running facility keeps its state (configs, tokens, logs, pid files, data).
STATE_DIR = Path(os.environ.get("RJQ_STATE_DIR", "/var/lib/remote-jobqueue"))


@dataclass(frozen=True)
class Site:
    """An execute site of the pool."""

    name: str
    #: Network namespace the site lives in; ``None`` for the hub side.
    netns: str | None
    #: The site's address on the facility bridge (the hub's for hub-side sites).
    address: str
    cpus: int = 8
    memory_mb: int = 8192
    #: Does the site have an XRootD cache of its own inside its network?
    own_cache: bool = False

    @property
    def private(self) -> bool:
        return self.netns is not None


def _on_hub(port_field: str, scheme: str = "") -> property:
    """The address (a ``str``) of a hub service: each listens on ``hub_address``, at the port of
    the field ``port_field``; ``scheme`` goes in front for URLs."""
    return property(lambda cfg: f"{scheme}{cfg.hub_address}:{getattr(cfg, port_field)}")


@dataclass(frozen=True)
class FacilityConfig:
    """The whole facility. Defaults are what tests and the README demo use."""

    bridge: str = "rjq0"
    #: The /24 used on the bridge; only namespaces and a bridge we create carry it.
    subnet_prefix: str = "10.213.77"
    hub_address: str = "10.213.77.1"
    uid_domain: str = "rjq.test"
    collector_port: int = 9618
    origin_port: int = 11094
    cache_port: int = 11095
    issuer_port: int = 18443
    gateway_port: int = 12222
    schedd_name: str = "hub@rjq.test"
    users: tuple[str, ...] = ("alice", "bob")
    sites: tuple[Site, ...] = field(
        default_factory=lambda: (
            Site("T2_LOCAL", None, "10.213.77.1", cpus=24, memory_mb=24576),
            Site("T2_A", "rjq-t2a", "10.213.77.11", own_cache=True),
            Site("T2_B", "rjq-t2b", "10.213.77.12"),
        )
    )
    state_dir: Path = STATE_DIR
    cache_dir: Path = CACHE_DIR
    #: Debian suite of the pool's root file system (bookworm has no HTCondor daemons).
    suite: str = "trixie"
    condor_packages: tuple[str, ...] = ("condor",)

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        known = ", ".join(s.name for s in self.sites)
        raise KeyError(f"unknown site {name!r}; the facility has: {known}")

    # Where the hub's services listen (not annotated: they are properties, not fields)
    collector = _on_hub("collector_port")
    issuer_url = _on_hub("issuer_port", "http://")
    gateway = _on_hub("gateway_port")
    origin_url = _on_hub("origin_port", "root://")
    hub_cache_url = _on_hub("cache_port", "root://")

    def cache_url_for(self, site_name: str) -> str:
        """The nearest cache of a site: its own if it has one, else the hub's."""
        site = self.site(site_name)
        if site.own_cache:
            return f"root://{site.address}:{self.cache_port}"
        return self.hub_cache_url

    # Directories of a running facility -------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run(self) -> Path:
        return self.state_dir / "run"

    def user_dir(self, user: str) -> Path:
        return self.state_dir / "users" / user
