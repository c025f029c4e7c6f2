"""How data reaches the sites: the cache topology, each cache's prefetch, and the WAN.

Three topologies, as the facility's site catalogue hands them to clients (each site's ``cache``):

- ``origin``: jobs read the origin directly, no cache;
- ``near-site`` (the default): a site's own cache, or the hub's for a site without one, which
  reads the origin;
- ``hierarchical``: a site's own cache reads through the hub cache, the *regional* cache, which
  reads the origin. It is a chain of caches in the proxy prefix
  (:func:`remote_jobqueue.data.proxy_prefix`): XCache forwards what follows its own address.

With ``tokens``, every server requires a token to read (:mod:`rjq_facility.storage_tokens`).

Per cache, XCache either prefetches the whole file while it is open (its default) or reads only
the blocks clients ask for (``lazy``, ``pfc.prefetch 0``).

The WAN (:mod:`rjq_facility.wan`) is off unless asked for, so the tests' timings stay those of
the machine. The settings live in the state directory while the facility is up (``down`` forgets
them with the rest) and are applied by ``up`` and by ``remote-jobqueue facility data``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .config import FacilityConfig

TOPOLOGIES = ("origin", "near-site", "hierarchical")
#: A ``tc`` rate in bits per second. (``tc`` reads ``mbps`` as megaBYTES: refused here.)
RATE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)$")


@dataclass(frozen=True)
class DataPaths:
    topology: str = "near-site"
    #: The caches (``cache-hub``, ``cache-T2_A``) that read blocks on demand, not whole files.
    lazy: tuple[str, ...] = ()
    wan: bool = False
    #: The origin's link (a national WAN's share) and each remote site's downlink (its share of
    #: the regional network), as ``tc`` rates. Scaled to this machine: see benchmarks/README.md.
    origin_rate: str = "200mbit"
    site_rate: str = "1gbit"
    #: Reads need a WLCG token with ``storage.read`` (:mod:`rjq_facility.storage_tokens`).
    tokens: bool = False

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {self.topology!r}; one of: {', '.join(TOPOLOGIES)}")
        for name in ("origin_rate", "site_rate"):
            if not RATE_RE.match(getattr(self, name)):
                raise ValueError(
                    f"{name.replace('_', ' ')} {getattr(self, name)!r} is not a rate like "
                    "200mbit, 1gbit or 500kbit"
                )

    def with_changes(self, **changes: object) -> DataPaths:
        changes = {k: v for k, v in changes.items() if v is not None}
        if "lazy" in changes:
            changes["lazy"] = tuple(sorted(changes["lazy"]))  # type: ignore[arg-type]
        return replace(self, **changes)  # type: ignore[arg-type]


def settings_file(cfg: FacilityConfig) -> Path:
    return cfg.state_dir / "data-paths.json"


def load(cfg: FacilityConfig) -> DataPaths:
    """The saved settings; the defaults if there are none, or (with a warning) unreadable ones,
    so that ``down`` and ``status`` always work."""
    try:
        raw = json.loads(settings_file(cfg).read_text())
        return DataPaths(**{**raw, "lazy": tuple(raw.get("lazy", ()))})
    except FileNotFoundError:
        return DataPaths()
    except (ValueError, TypeError) as err:
        warnings.warn(f"ignoring {settings_file(cfg)}: {err}", stacklevel=2)
        return DataPaths()


def save(cfg: FacilityConfig, paths: DataPaths) -> None:
    cache_names = {f"cache-{s.name}" for s in cfg.sites if s.own_cache} | {"cache-hub"}
    unknown = set(paths.lazy) - cache_names
    if unknown:
        raise ValueError(
            f"no such cache: {', '.join(sorted(unknown))}; the facility has: "
            + ", ".join(sorted(cache_names))
        )
    path = settings_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(paths), indent=1) + "\n")
    os.replace(partial, path)


def cache_for(cfg: FacilityConfig, site_name: str, topology: str) -> str | None:
    """What a site's jobs read through under ``topology``: ``None`` (the origin itself), a
    cache, or a chain of caches nearest first."""
    site = cfg.site(site_name)
    if topology == "origin":
        return None
    if topology == "hierarchical" and site.own_cache:
        return f"{cfg.cache_url_for(site_name)}//{cfg.hub_cache_url}"
    return cfg.cache_url_for(site_name)
