"""What the development facility looks like: addresses, ports, sites, users and directories.

One frozen description feeds every part (network, pool, XRootD, issuer), so `up`, `down`,
`status` and `env` always agree on what exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .containers import slug

#: Where a running facility keeps its state (configs, tokens, logs, pid files, data).
STATE_DIR = Path(os.environ.get("RJQ_STATE_DIR", "/var/lib/remote-jobqueue"))


@dataclass(frozen=True)
class Site:
    """An execute site of the pool."""

    name: str
    #: The name its execute container's network namespace is attached as (``ip netns``), so
    #: the facility and its tests can run a process inside the site; ``None`` for the hub side.
    netns: str | None
    #: The address of the site's execute node (for hub-side sites, the pool container's).
    address: str
    cpus: int = 8
    memory_mb: int = 8192
    #: Does the site have an XRootD cache of its own inside its network?
    own_cache: bool = False
    #: A remote site's own private network (a /24), behind its NAT router.
    subnet: str | None = None
    #: The image of its nodes: ``condor``, or ``worker`` (a Python of its own at /opt/rjq).
    image: str = "condor"

    @property
    def private(self) -> bool:
        return self.netns is not None

    @property
    def network(self) -> str:
        """The podman network of a remote site."""
        return f"rjq-{slug(self.name)}"

    def _host(self, number: int) -> str:
        assert self.subnet is not None, f"{self.name} has no network of its own"
        return f"{self.subnet.rsplit('.', 1)[0]}.{number}"

    @property
    def cache_address(self) -> str:
        """Where a remote site's own XRootD cache listens, on the site's network."""
        return self._host(12)

    @property
    def router(self) -> str:
        """The NAT router's address on the site's network: the site's default route."""
        return self._host(254)


def _on_hub(port_field: str, scheme: str = "") -> property:
    """The address (a ``str``) of a hub service: each listens on ``hub_address``, at the port of
    the field ``port_field``; ``scheme`` goes in front for URLs."""
    return property(lambda cfg: f"{scheme}{cfg.hub_address}:{getattr(cfg, port_field)}")


@dataclass(frozen=True)
class FacilityConfig:
    """The whole facility. Defaults are what tests and the README demo use."""

    #: The hub side's podman network; the host is ``hub_address`` on its bridge.
    hub_network: str = "rjq-hub"
    #: The /24 of the hub side; only podman networks we create carry this and the sites' nets.
    subnet_prefix: str = "10.213.77"
    #: The host on the hub network: the issuer and the gateway listen here.
    hub_address: str = "10.213.77.1"
    #: The pool's container on the hub side: collector, negotiator, schedd, and T2_LOCAL.
    pool_address: str = "10.213.77.2"
    #: The XRootD origin's and the hub cache's containers.
    origin_address: str = "10.213.77.3"
    hub_cache_address: str = "10.213.77.4"
    #: A machine outside the hub (a laptop, a login node elsewhere): a network namespace of
    #: its own, ``outside_address`` on a /24 whose only way anywhere is the host, which
    #: routes it to the hub network and nowhere else.
    outside_netns: str = "rjq-outside"
    outside_subnet_prefix: str = "10.213.90"
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
            Site("T2_LOCAL", None, "10.213.77.2", cpus=24, memory_mb=24576),
            Site("T2_A", "rjq-t2a", "10.213.78.11", own_cache=True, subnet="10.213.78.0/24"),
            Site("T2_B", "rjq-t2b", "10.213.79.11", subnet="10.213.79.0/24", image="worker"),
        )
    )
    state_dir: Path = STATE_DIR

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        known = ", ".join(s.name for s in self.sites)
        raise KeyError(f"unknown site {name!r}; the facility has: {known}")

    @property
    def hub_subnet(self) -> str:
        return f"{self.subnet_prefix}.0/24"

    @property
    def outside_subnet(self) -> str:
        return f"{self.outside_subnet_prefix}.0/24"

    @property
    def outside_address(self) -> str:
        """The outside machine's address (the host is ``.1`` on its link)."""
        return f"{self.outside_subnet_prefix}.2"

    def router_hub_address(self, site: Site) -> str:
        """A site's NAT router on the hub network: what the hub side sees the site's
        connections come from."""
        index = [s.name for s in self.sites if s.private].index(site.name)
        return f"{self.subnet_prefix}.{21 + index}"

    @property
    def collector(self) -> str:
        return f"{self.pool_address}:{self.collector_port}"

    # Where the hub's services listen (not annotated: they are properties, not fields)
    issuer_url = _on_hub("issuer_port", "http://")
    gateway = _on_hub("gateway_port")

    @property
    def origin_url(self) -> str:
        return f"root://{self.origin_address}:{self.origin_port}"

    @property
    def hub_cache_url(self) -> str:
        return f"root://{self.hub_cache_address}:{self.cache_port}"

    def cache_url_for(self, site_name: str) -> str:
        """The nearest cache of a site: its own if it has one, else the hub's."""
        site = self.site(site_name)
        if site.own_cache:
            return f"root://{site.cache_address}:{self.cache_port}"
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
