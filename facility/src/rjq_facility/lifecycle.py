"""`facility up | down | status | env`: the whole development facility as one thing.

The order matters: network first (daemons bind to the bridge and site addresses), then the pool
(whose hub makes the signing key the users' tokens need), then the issuer and XRootD. `down`
undoes all of it whatever state it finds, so a half-failed `up` is cleaned by `down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import (
    condor,
    containers,
    data_paths,
    gateway_service,
    images,
    network,
    processes,
    scitokens,
    wan,
)
from .config import FacilityConfig


class FacilityError(RuntimeError):
    """The facility cannot start; the message says what is missing and how to fix it."""


def software_area() -> list[Path]:
    """Host paths every node mounts read-only: the interpreter, the virtualenv and the
    directory the `remote_jobqueue` package is imported from (a checkout's ``src`` when
    installed editable). The site catalogue names this Python (``python``), as a real one names
    the Python of a CVMFS release.

    Not the whole checkout: the nodes need the product only; this facility's own code runs on
    the host.
    """
    import remote_jobqueue

    package_dir = Path(remote_jobqueue.__file__).resolve().parents[1]
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), package_dir}
    # Drop paths inside others: one mount covers them.
    return sorted(p for p in paths if not any(q != p and q in p.parents for q in paths))


def preflight(
    cfg: FacilityConfig, tools: tuple[str, ...] = ("ip", "podman", "nft", "nsenter", "debootstrap")
) -> None:
    if os.geteuid() != 0:
        raise FacilityError(
            "the facility needs root (podman networks, routes, namespaces): run it as root"
        )
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise FacilityError(
            f"missing commands {missing}: "
            "apt-get install -y iproute2 podman nftables util-linux debootstrap "
            "(or run scripts/setup.sh)"
        )


def facility_ports(cfg: FacilityConfig) -> dict[int, str]:
    """The ports the facility's daemons on the host listen on (the rest are containers')."""
    return {cfg.issuer_port: "OIDC issuer", cfg.gateway_port: "SSH gateway"}


def check_ports_free(cfg: FacilityConfig, address: str | None = None) -> None:
    """Fail clearly if another program holds a port the facility needs."""
    import socket

    taken = []
    for port, what in facility_ports(cfg).items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address or "0.0.0.0", port))
            except OSError:
                taken.append(f"{port} ({what})")
    if taken:
        raise FacilityError(
            f"ports taken by another program: {', '.join(taken)}. Stop it (`ss -ltnp` shows "
            "which), or run `remote-jobqueue facility down` if it is an earlier facility."
        )


def up(cfg: FacilityConfig | None = None, log=print) -> FacilityConfig:
    cfg = cfg or FacilityConfig()
    preflight(cfg)
    started = time.monotonic()
    built = images.ensure_images(log=log)
    software = software_area()
    recipe = {"images": built, "software": [str(p) for p in software]}
    running = _running_recipe(cfg)
    if running is not None and running != recipe:
        # Started from other images, or for another checkout or virtualenv: the nodes would
        # not run what this one has.
        log("the running facility uses other images or another Python: restarting it …")
        down(cfg, log=log)
    if not any(lifecycle_pids(cfg)):
        check_ports_free(cfg)
    for path in (cfg.state_dir, cfg.logs, cfg.run):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    (cfg.state_dir / "recipe.json").write_text(json.dumps(recipe))
    log("starting the networks and the sites' NAT routers …")
    network.up(cfg, built["nat"])
    log("starting the HTCondor pool …")
    condor.up(cfg, built, software)
    from . import issuer, xrootd

    log("starting the OIDC issuer …")
    issuer.up(cfg)
    log("starting the SSH gateway …")
    gateway_service.up(cfg)
    log("starting XRootD (origin and caches) …")
    xrootd.up(cfg, built["xrootd"])
    if (paths := data_paths.load(cfg)).wan:
        wan.apply(cfg, paths)
    cpus = condor.wait_for_sites(cfg)
    log(f"facility up in {time.monotonic() - started:.0f} s; sites: {cpus}")
    return cfg


def _running_recipe(cfg: FacilityConfig) -> dict | None:
    try:
        return json.loads((cfg.state_dir / "recipe.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def lifecycle_pids(cfg: FacilityConfig) -> list[int]:
    """Pids of daemons a previous `up` started (an `up` on a running facility is a no-op)."""
    if not cfg.run.exists():
        return []
    return [pid for f in cfg.run.glob("*.pid") if (pid := processes.pid_of(f.stem, cfg.run))]


def down(cfg: FacilityConfig | None = None, log=print) -> None:
    cfg = cfg or FacilityConfig()
    # Cleaning up needs only what it uses, so a machine without the build tools can too.
    preflight(cfg, tools=("ip", "podman"))
    from . import issuer, xrootd

    parts = (("XRootD", xrootd.down), ("gateway", gateway_service.down), ("issuer", issuer.down))
    for part, stop in parts:
        try:
            stop(cfg)
        except Exception as err:
            log(f"stopping the {part}: {err}")
    condor.down(cfg)
    for leftover in processes.pids_in_netns_any(cfg):
        processes.kill_group_or_pid(leftover, timeout=5)
    network.down(cfg)
    if cfg.state_dir.exists():
        shutil.rmtree(cfg.state_dir)
    log("facility down: no daemon, container, podman network, route or namespace left")


def status(cfg: FacilityConfig | None = None) -> dict:
    cfg = cfg or FacilityConfig()
    from . import issuer, xrootd

    return {
        "recipe": _running_recipe(cfg),
        "network": network.status(cfg),
        "condor": condor.running(cfg),
        "issuer": issuer.status(cfg),
        "gateway": gateway_service.status(cfg),
        "xrootd": xrootd.status(cfg),
        "data-paths": data_status(cfg),
    }


def data_status(cfg: FacilityConfig) -> dict:
    """The topology, the lazy caches, and each WAN link's rate as the kernel has it."""
    from dataclasses import asdict

    paths = data_paths.load(cfg)
    shaped = wan.shaping(cfg) if cfg.state_dir.exists() else {}
    return {**asdict(paths), "shaped": shaped}


def set_data_paths(cfg: FacilityConfig | None = None, log=print, **changes: object) -> dict:
    """Change how data reaches the sites on a running facility: restart the caches whose
    settings changed (empty, as after any restart), reshape the WAN."""
    from . import xrootd

    cfg = cfg or FacilityConfig()
    recipe = _running_recipe(cfg)
    origin = xrootd.servers(cfg)[0]
    if recipe is None or not containers.running(origin.container):
        raise RuntimeError("the facility is not up: run `remote-jobqueue facility up` first")
    before = data_paths.load(cfg)
    paths = before.with_changes(**changes)
    data_paths.save(cfg, paths)  # first: the caches' configs are made from it
    try:
        xrootd.up(cfg, recipe["images"]["xrootd"])
        wan.apply(cfg, paths)
    except Exception:
        data_paths.save(cfg, before)
        with contextlib.suppress(Exception):  # put back what ran; the first error is the news
            xrootd.up(cfg, recipe["images"]["xrootd"])
            wan.apply(cfg, before)
        raise
    log(f"data paths: {paths}")
    return data_status(cfg)


def site_catalogue(cfg: FacilityConfig) -> dict[str, dict[str, str]]:
    """The facility's sites as a `remote-jobqueue.sites` Dask config section."""
    host_key = gateway_service.public_host_key(cfg)
    paths = data_paths.load(cfg)
    # With token-protected reads, jobs trust the CA of the XRootD servers' certificates.
    ca = scitokens.ca_file(cfg).read_text() if paths.tokens else None
    return {
        site.name: {
            "collector": cfg.collector,
            "schedd": cfg.schedd_name,
            "requirements": f'TARGET.SiteName == "{site.name}"',
            "cache": data_paths.cache_for(cfg, site.name, paths.topology),
            "xrootd-ca": ca,
            "gateway": cfg.gateway,
            "gateway-host-key": host_key,
            # Every node mounts this host's Python at the same path, read-only: the
            # facility's software area (as CVMFS serves a real one).
            "python": sys.executable,
            "label": f"HTCondor-{site.name}",
        }
        for site in cfg.sites
    }


def public_client_settings(cfg: FacilityConfig | None = None) -> dict:
    """What `remote-jobqueue configure` takes: the sites, the issuer, the pool (no secret)."""
    from . import issuer, scitokens

    cfg = cfg or FacilityConfig()
    return {
        "remote-jobqueue": {
            "sites": site_catalogue(cfg),
            "issuer": cfg.issuer_url,
            "login-audience": user_audiences(),
        },
        "htcondor": {
            "collector": cfg.collector,
            "ca": scitokens.ca_file(cfg).read_text(),
        },
        "oidc": {"client-id": issuer.PUBLIC_CLIENT},
    }


def user_audiences() -> list[str]:
    """The audiences of a user's token: every place a cluster logs in (the gateway, and as a
    SciToken the schedd) and the storage (token-protected reads)."""
    from . import storage_tokens

    return [
        gateway_service.GATEWAY_AUDIENCE,
        scitokens.POOL_AUDIENCE,
        storage_tokens.STORAGE_AUDIENCE,
    ]


def client_dask_config(cfg: FacilityConfig, user: str) -> dict:
    return {
        "remote-jobqueue": {
            "sites": site_catalogue(cfg),
            "token-file": str(cfg.user_dir(user) / "bearer-token"),
        }
    }


def env(cfg: FacilityConfig | None = None, user: str = "alice") -> dict[str, str]:
    """What a client process of ``user`` needs: HTCondor, gateway, token, sites and data settings.

    Writes the user's Dask config (the site catalogue) and a fresh bearer token (0600) into the
    user's private directory; the environment only names files, never holds a token.
    """
    import yaml

    from remote_jobqueue.data import cache_environment, write_proxy_plugin_conf
    from remote_jobqueue.storage_auth import write_ca_dir
    from remote_jobqueue.tokens import write_token_file

    from . import dataset, issuer

    cfg = cfg or FacilityConfig()
    if user not in cfg.users:
        raise FacilityError(f"unknown user {user!r}; the facility has {', '.join(cfg.users)}")
    udir = cfg.user_dir(user)
    dask_dir = udir / "dask"
    dask_dir.mkdir(parents=True, exist_ok=True)
    (dask_dir / "remote-jobqueue.yaml").write_text(yaml.safe_dump(client_dask_config(cfg, user)))
    token = issuer.password_grant(cfg, user, audience=user_audiences())
    write_token_file(udir / "bearer-token", token["access_token"])
    plugin_dir = write_proxy_plugin_conf(cfg.state_dir / "xrootd" / "client-plugins")
    storage_ca = {}
    if data_paths.load(cfg).tokens:
        ca_dir = write_ca_dir(scitokens.ca_file(cfg).read_text(), cfg.state_dir / "xrootd" / "ca")
        storage_ca["X509_CERT_DIR"] = str(ca_dir)
    return {
        "CONDOR_CONFIG": str(udir / "condor_config"),
        "DASK_CONFIG": str(dask_dir),
        "BEARER_TOKEN_FILE": str(udir / "bearer-token"),
        "RJQ_FACILITY_USER": user,
        "RJQ_ISSUER_URL": cfg.issuer_url,
        "RJQ_XROOTD_ORIGIN": cfg.origin_url,
        # What `remote_jobqueue.analysis.files` lists when no files are named.
        "RJQ_DATASET_DIR": dataset.DATASET_DIR,
        **cache_environment(cfg.hub_cache_url, plugin_dir),
        **storage_ca,
    }


def leftovers(cfg: FacilityConfig | None = None) -> list[str]:
    """Everything of the facility still on the machine (empty after a clean `down`)."""
    cfg = cfg or FacilityConfig()
    found = []
    net = network.status(cfg)
    found += [
        f"network namespace of {site}" for site, exists in net["namespaces"].items() if exists
    ]
    found += [f"unreachable route to {site}" for site, seen in net["unreachable"].items() if seen]
    if net["hub_address"]:
        found.append(f"the host's address {cfg.hub_address}")
    if net["egress_rules"]:
        found.append(f"nftables table {network.EGRESS_TABLE}")
    for pidfile in cfg.run.glob("*.pid") if cfg.run.exists() else []:
        pid = processes.pid_of(pidfile.stem, cfg.run)
        if pid:
            found.append(f"process {pid} ({pidfile.stem})")
    found += [f"container {name}" for name in images.containers()]
    found += [f"podman network {name}" for name in images.networks()]
    return found
