"""A WAN between the origin and the sites: token-bucket rate limits on the links data crosses.

Two kinds of link, each shaped where its packets leave (``tc ... tbf`` shapes egress):

- the origin's: its container's interface, so whatever the origin sends (to the hub cache, a
  site's cache, a job reading it directly) shares one national link;
- each remote site's downlink: its NAT router's interface on the site's network, so whatever
  enters the site (from the origin or from the hub's regional cache) shares the site's link.

This kernel has no ``netem``, so the WAN has bandwidth and no added latency. The rules are set
from the host in each container's network namespace (the containers have no ``NET_ADMIN``), and
go with the containers when the facility goes down.
"""

from __future__ import annotations

import json
import subprocess

from . import containers
from .config import FacilityConfig
from .data_paths import DataPaths
from .network import router_name

#: tbf's bucket: 1 MiB, 8 ms at a Gb/s: bursts stay short next to a second's transfer.
BURST = "1mb"
#: How long a packet may wait in the bucket's queue before tbf drops it.
LATENCY = "100ms"


class WanError(RuntimeError):
    pass


def links(cfg: FacilityConfig, paths: DataPaths) -> dict[str, tuple[str, str, str]]:
    """``name -> (container, its address on the link, rate)`` for every shaped link."""
    from .xrootd import servers

    origin = servers(cfg)[0]
    found = {"origin": (origin.container, origin.address, paths.origin_rate)}
    for site in cfg.sites:
        if site.private:
            found[site.name] = (router_name(site), site.router, paths.site_rate)
    return found


def _in(container: str, *argv: str) -> subprocess.CompletedProcess:
    pid = containers.pid(container)
    return subprocess.run(
        ["nsenter", "-t", pid, "-n", *argv], capture_output=True, text=True, check=False
    )


def _interface(container: str, address: str) -> str:
    if not containers.running(container):
        raise WanError(f"{container} is not running: is the facility up?")
    done = _in(container, "ip", "-j", "-4", "addr", "show", "to", address)
    # Older iproute2 lists the other interfaces too, as entries without addresses.
    found = [i for i in json.loads(done.stdout or "[]") if i.get("addr_info")]
    if done.returncode != 0 or not found:
        raise WanError(f"{container} has no interface with {address}: {done.stderr.strip()}")
    return found[0]["ifname"]


def apply(cfg: FacilityConfig, paths: DataPaths) -> dict[str, str | None]:
    """Shape every link as ``paths`` says (or unshape it); return each link's rate or None.

    Unshaping skips what is not running: a link that is gone carries nothing."""
    result: dict[str, str | None] = {}
    for name, (container, address, rate) in links(cfg, paths).items():
        result[name] = rate if paths.wan else None
        if not paths.wan and not containers.running(container):
            continue
        device = _interface(container, address)
        if paths.wan:
            tbf = ["tbf", "rate", rate, "burst", BURST, "latency", LATENCY]
            done = _in(container, "tc", "qdisc", "replace", "dev", device, "root", *tbf)
        else:
            done = _in(container, "tc", "qdisc", "del", "dev", device, "root")
            if "handle of zero" in done.stderr:  # nothing was there to remove
                continue
        if done.returncode != 0:
            raise WanError(f"shaping {name} ({container} {device}): {done.stderr.strip()}")
    return result


def sent_bytes(cfg: FacilityConfig) -> dict[str, int]:
    """Bytes each link has carried towards its far side so far (interface counters)."""
    counts = {}
    for name, (container, address, _) in links(cfg, DataPaths()).items():
        device = _interface(container, address)
        done = _in(container, "ip", "-j", "-s", "link", "show", "dev", device)
        if done.returncode != 0:
            raise WanError(f"counters of {name}: {done.stderr.strip()}")
        counts[name] = int(json.loads(done.stdout)[0]["stats64"]["tx"]["bytes"])
    return counts


def shaping(cfg: FacilityConfig) -> dict[str, str | None]:
    """Each link's tbf rate as the kernel has it (``"200mbit"``), None if unshaped or not
    running, or what went wrong asking (for ``facility status``, which must not fail)."""
    result: dict[str, str | None] = {}
    for name, (container, address, _) in links(cfg, DataPaths()).items():
        try:
            result[name] = _rate(container, address)
        except (WanError, RuntimeError, ValueError, KeyError) as err:
            result[name] = f"unknown: {err}"
    return result


def _rate(container: str, address: str) -> str | None:
    if not containers.running(container):
        return None
    device = _interface(container, address)
    done = _in(container, "tc", "-j", "qdisc", "show", "dev", device, "root")
    tbf = next((q for q in json.loads(done.stdout or "[]") if q.get("kind") == "tbf"), None)
    # tc -j gives the rate in bytes per second; say it as it was asked for.
    return f"{int(tbf['options']['rate']) * 8 / 1e6:g}mbit" if tbf else None
