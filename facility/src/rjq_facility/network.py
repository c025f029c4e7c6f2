"""The facility's network: a private bridge for the hub side, a namespace per remote site.

A remote site is a network namespace joined to the hub's bridge by a veth pair, with a firewall
that accepts no new inbound connection: like a site behind NAT, it can dial the hub, but the
hub cannot dial it (HTCondor's CCB carries the pool's own traffic back). Only addresses of the
facility's own subnet exist on these links, and site namespaces have no default route, so no
packet can leave the machine.
"""

from __future__ import annotations

import shutil
import subprocess

from .config import FacilityConfig, Site

SITE_FIREWALL = """
table inet rjq_site {
    chain input {
        type filter hook input priority 0; policy drop;
        iifname "lo" accept
        ct state established,related accept
        icmp type echo-reply accept
    }
}
"""


class NetworkError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _exists(*args: str) -> bool:
    return _ip(*args, check=False).returncode == 0


def veth_host_name(site: Site) -> str:
    return f"{site.netns}-h"[:15]


def up(cfg: FacilityConfig) -> None:
    """Create the bridge and the site namespaces (idempotent)."""
    if shutil.which("ip") is None:
        raise NetworkError("the ip command is missing: apt-get install -y iproute2")
    if shutil.which("nft") is None:
        raise NetworkError("the nft command is missing: apt-get install -y nftables")
    if not _exists("link", "show", cfg.bridge):
        _ip("link", "add", cfg.bridge, "type", "bridge")
    addrs = _ip("-o", "addr", "show", "dev", cfg.bridge).stdout
    if f" {cfg.hub_address}/" not in addrs:
        _ip("addr", "add", f"{cfg.hub_address}/24", "dev", cfg.bridge)
    _ip("link", "set", cfg.bridge, "up")
    for site in cfg.sites:
        if site.private:
            _site_up(cfg, site)


def _site_up(cfg: FacilityConfig, site: Site) -> None:
    ns = site.netns
    assert ns is not None
    if ns not in _ip("netns", "list").stdout.split():
        _ip("netns", "add", ns)
    host_end = veth_host_name(site)
    if not _exists("link", "show", host_end):
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", host_end, "master", cfg.bridge)
    _ip("link", "set", host_end, "up")
    nsaddrs = _ip("-n", ns, "-o", "addr", "show", "dev", "eth0").stdout
    if f" {site.address}/" not in nsaddrs:
        _ip("-n", ns, "addr", "add", f"{site.address}/24", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=f"flush ruleset\n{SITE_FIREWALL}",
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise NetworkError(f"firewall of {site.name}: {proc.stderr.strip()}")


def down(cfg: FacilityConfig) -> None:
    """Remove the namespaces, veths and the bridge (whatever of them exists)."""
    for site in cfg.sites:
        if not site.private:
            continue
        _ip("link", "del", veth_host_name(site), check=False)
        _ip("netns", "del", site.netns, check=False)
    _ip("link", "del", cfg.bridge, check=False)


def status(cfg: FacilityConfig) -> dict:
    namespaces = _ip("netns", "list", check=False).stdout.split()
    return {
        "bridge": _exists("link", "show", cfg.bridge),
        "namespaces": {s.name: s.netns in namespaces for s in cfg.sites if s.private},
    }
