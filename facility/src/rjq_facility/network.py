"""The facility's network: podman networks for the hub side and for each remote site.

The hub side is a podman network whose bridge carries the host at ``hub_address``:
the issuer and the gateway run on the host and listen there, and the pool's and XRootD's
containers sit beside them. Each remote site is an *internal* podman network (no route to or
from the host) whose only way out is the site's NAT router, a container of ``docker/nat`` on both
networks: the site dials the hub side, masqueraded as the router, and nothing on the hub side
can dial into the site (HTCondor's CCB carries the pool's own traffic back), as at a Tier-2.

A machine *outside* the hub (a laptop) is a network namespace of its own, linked to the host by
a veth pair: the host routes it to the hub network, as the internet would route a laptop to
the facility's public addresses, and drops what it sends anywhere else.

The host gets an *unreachable* route for every site network, so a try from the hub side fails
at once; without it, this machine would send such packets to its default gateway. The router
forwards only towards the hub network, and the host forwards nothing from the hub network but
to the facility's own networks (podman would masquerade it to anywhere), so no packet of the
facility leaves the machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from . import containers
from .config import FacilityConfig, Site
from .containers import slug

#: Label on everything the facility makes in podman (`images.containers()` finds them by it).
LABEL = "org.remote-jobqueue.facility=1"


#: The host's nftables table that keeps the hub network's packets on this machine.
EGRESS_TABLE = "rjq_facility_egress"


class NetworkError(RuntimeError):
    pass


def egress_rules(cfg: FacilityConfig) -> str:
    """Drop what the host would forward from the hub network to anywhere but the facility."""
    own = ", ".join(
        [cfg.hub_subnet, cfg.outside_subnet, *(s.subnet for s in cfg.sites if s.subnet)]
    )
    return f"""table ip {EGRESS_TABLE} {{
    chain forward {{
        type filter hook forward priority -10; policy accept;
        ip saddr {cfg.hub_subnet} ip daddr != {{ {own} }} drop
        ip saddr {cfg.outside_subnet} ip daddr != {cfg.hub_subnet} drop
    }}
}}
"""


#: The host's end of the outside machine's link (its own end is ``eth0`` in the namespace).
OUTSIDE_LINK = "rjq-outside0"


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def router_name(site: Site) -> str:
    return f"rjq-nat-{slug(site.name)}"


def _network_exists(name: str) -> bool:
    return _run(["podman", "network", "exists", name], check=False).returncode == 0


def _create_network(name: str, subnet: str, *extra: str) -> None:
    if not _network_exists(name):
        _run(["podman", "network", "create", "--label", LABEL, "--subnet", subnet, *extra, name])


def up(cfg: FacilityConfig, nat_image: str) -> None:
    """Create the networks, the host's unreachable routes and the sites' routers (idempotent)."""
    for tool in ("ip", "podman", "nft"):
        if shutil.which(tool) is None:
            raise NetworkError(f"the {tool} command is missing: run scripts/setup.sh")
    _run(["nft", "delete", "table", "ip", EGRESS_TABLE], check=False)
    proc = subprocess.run(
        ["nft", "-f", "-"], input=egress_rules(cfg), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise NetworkError(f"the hub network's egress rules: {proc.stderr.strip()}")
    _create_network(
        cfg.hub_network,
        cfg.hub_subnet,
        "--gateway",
        cfg.hub_address,
    )
    for site in cfg.sites:
        if site.private:
            assert site.subnet is not None
            _create_network(site.network, site.subnet, "--internal")
            _run(["ip", "route", "replace", "unreachable", site.subnet])
            _router_up(cfg, site, nat_image)
    _outside_up(cfg)


def _outside_up(cfg: FacilityConfig) -> None:
    """The outside machine's namespace and its link to the host (idempotent)."""
    ns = cfg.outside_netns
    if ns in _run(["ip", "netns", "list"], check=False).stdout.split():
        return
    host_end = f"{cfg.outside_subnet_prefix}.1"
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", OUTSIDE_LINK, "type", "veth", "peer", "name", "eth0", "netns", ns])
    _run(["ip", "addr", "add", f"{host_end}/24", "dev", OUTSIDE_LINK])
    _run(["ip", "link", "set", OUTSIDE_LINK, "up"])
    inside = ["ip", "netns", "exec", ns, "ip"]
    _run([*inside, "addr", "add", f"{cfg.outside_address}/24", "dev", "eth0"])
    _run([*inside, "link", "set", "eth0", "up"])
    _run([*inside, "link", "set", "lo", "up"])
    _run([*inside, "route", "add", "default", "via", host_end])
    quick_failing_resolver(ns)


def _router_up(cfg: FacilityConfig, site: Site, image: str) -> None:
    name = router_name(site)
    if containers.running(name):
        return
    containers.remove(name)
    _run(
        [
            "podman",
            "run",
            "--detach",
            "--name",
            name,
            "--label",
            LABEL,
            "--cap-add",
            "NET_ADMIN",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--network",
            f"{cfg.hub_network}:ip={cfg.router_hub_address(site)}",
            "--network",
            f"{site.network}:ip={site.router}",
            "--env",
            f"RJQ_SITE_SUBNET={site.subnet}",
            "--env",
            f"RJQ_HUB_SUBNET={cfg.hub_subnet}",
            image,
        ]
    )


#: Where ``ip netns exec <name>`` finds the files it puts over ``/etc`` (``resolv.conf``).
NETNS_ETC = Path("/etc/netns")
#: A resolver that fails at once. No DNS server answers inside the facility's namespaces, and
#: with the host's (or podman's) resolver every lookup of a name not in /etc/hosts (an IPv6
#: address of the host's own name, say) waited twice 5 s for nothing: the XRootD client's
#: login at T2_A took 10 s. Nothing listens on port 53 here, so a lookup fails in microseconds.
NO_DNS = "127.0.0.1"


def quick_failing_resolver(netns: str) -> None:
    """``ip netns exec`` in ``netns`` gets the :data:`NO_DNS` resolver (as the nodes have)."""
    directory = NETNS_ETC / netns
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(f"nameserver {NO_DNS}\n")


def forget_resolver(netns: str) -> None:
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def attach_netns(site: Site, container: str) -> None:
    """Name the network namespace of ``container`` ``site.netns``, so that ``ip netns exec``
    runs a process inside the site (the facility's readiness checks, the tests' probes).
    Idempotent: a name left by an earlier container is replaced."""
    assert site.netns is not None
    pid = containers.pid(container)
    _run(["ip", "netns", "delete", site.netns], check=False)
    _run(["ip", "netns", "attach", site.netns, pid])
    quick_failing_resolver(site.netns)


def down(cfg: FacilityConfig) -> None:
    """Remove the routers, the networks, the routes and the namespace names (whatever exists).

    The containers on the networks must be gone first (``condor.down``)."""
    # Deleting the namespace deletes its link, the host's end with it.
    _run(["ip", "netns", "delete", cfg.outside_netns], check=False)
    forget_resolver(cfg.outside_netns)
    for site in cfg.sites:
        if not site.private:
            continue
        containers.remove(router_name(site), grace=2)
        if site.netns:
            _run(["ip", "netns", "delete", site.netns], check=False)
            forget_resolver(site.netns)
        if site.subnet:
            _run(["ip", "route", "delete", "unreachable", site.subnet], check=False)
    for name in [s.network for s in cfg.sites if s.private] + [cfg.hub_network]:
        if _network_exists(name):
            _run(["podman", "network", "rm", "--force", name])
    _run(["nft", "delete", "table", "ip", EGRESS_TABLE], check=False)


def bridge_of(network: str) -> str | None:
    """The host's bridge of a podman network (CNI names it ``cni-podmanN``), if it exists."""
    proc = _run(["podman", "network", "inspect", network], check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0].get("network_interface")


def _unreachable_routes(cfg: FacilityConfig) -> set[str]:
    proc = _run(["ip", "-j", "route", "show", "type", "unreachable"], check=False)
    try:
        routes = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        routes = []
    return {route.get("dst", "") for route in routes}


def status(cfg: FacilityConfig) -> dict:
    namespaces = _run(["ip", "netns", "list"], check=False).stdout.split()
    routes = _unreachable_routes(cfg)
    private = [s for s in cfg.sites if s.private]
    addresses = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    tables = _run(["nft", "list", "tables"], check=False).stdout.split()
    return {
        "bridge": bridge_of(cfg.hub_network),
        # The host's address on the hub network, even on a bridge podman no longer knows.
        "hub_address": f" {cfg.hub_address}/" in addresses,
        "egress_rules": EGRESS_TABLE in tables,
        "networks": {
            name: _network_exists(name) for name in [cfg.hub_network, *(s.network for s in private)]
        },
        "namespaces": {
            **{s.name: s.netns in namespaces for s in private},
            "outside": cfg.outside_netns in namespaces,
        },
        "routers": {s.name: containers.running(router_name(s)) for s in private},
        "unreachable": {s.name: s.subnet in routes for s in private},
    }
