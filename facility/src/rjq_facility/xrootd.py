"""The facility's XRootD servers: one origin and the caches (XCache) in front of it.

Each server is a container of ``docker/xrootd``. The origin on the hub network exports
``/store`` (the generated dataset). A hub-side cache serves the notebook and the sites without a
cache; each site with ``own_cache`` gets its own cache on its network, so its jobs read through
a server in their own network, as at a real site, and that cache reaches the origin through the
site's NAT router. Clients are sent to a cache by the proxy plugin (:mod:`remote_jobqueue.data`),
which rewrites ``root://origin//store/f`` to ``root://cache//root://origin//store/f``: that is
why the caches also export ``/root:/`` and ``/xroot:/`` (forwarding mode).

A server's home (configuration, admin and pid directories, the data or the cache) is under the
facility's state directory, mounted at the same path, owned by the image's ``xrootd`` user
(xrootd refuses to run as root). Its log is the container's, kept in the facility's log dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rjq_facility import containers, data_paths, dataset, storage_tokens, ttbar_dataset
from rjq_facility.config import FacilityConfig
from rjq_facility.containers import slug
from rjq_facility.network import LABEL, NO_DNS
from rjq_facility.processes import wait_for_port

XROOTD_USER = "xrootd"


@dataclass(frozen=True)
class Server:
    """One xrootd instance: where it listens and where it keeps its files."""

    name: str
    #: ``<state>/xrootd/<name>``: config, admin and pid dirs, plus data (origin) or cache.
    home: Path
    address: str
    port: int
    #: The podman network the server's container is on.
    network: str
    #: Where the server can be reached from: ``None`` the host, else a site's namespace.
    netns: str | None
    #: ``host:port`` of the origin for a cache, ``None`` for the origin itself.
    origin: str | None
    #: On a site's network: the site's NAT router, the server's default route.
    router: str | None = None
    #: A cache that reads only the blocks clients ask for (else it prefetches whole files).
    lazy: bool = False
    #: Caches it may forward to besides the origin: a site cache's regional one, permitted in
    #: every topology since only the proxy prefix a job gets decides whether it is used.
    upstream_caches: tuple[str, ...] = ()
    #: Reads need a token (``ztn`` over TLS, SciTokens): :mod:`rjq_facility.storage_tokens`.
    tokens: bool = False

    @property
    def daemon(self) -> str:
        return f"xrootd-{self.name}"

    @property
    def container(self) -> str:
        return f"rjq-xrootd-{slug(self.name)}"

    @property
    def mac(self) -> str:
        """A fixed MAC address, from the IP one: a restarted server (a cache whose settings
        changed) keeps it, so the neighbours' ARP entries stay right. With a new MAC each
        start, the site's nodes sent to the old one for half a minute."""
        return "02:52:" + ":".join(f"{int(octet):02x}" for octet in self.address.split("."))

    @property
    def url(self) -> str:
        return f"root://{self.address}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.home / "xrootd.cfg"

    @property
    def data_dir(self) -> Path:
        """The origin's export root, or the cache's storage (wiped on every start)."""
        return self.home / ("data" if self.origin is None else "cache")

    def config(self) -> str:
        common = [
            f"xrd.port {self.port}",
            # No DNS answers on a site's network: a reverse lookup of each client timed out
            # twice (20 s) before the server even answered the handshake.
            "xrd.network nodnr",
            *(storage_tokens.config_lines(self.home) if self.tokens else []),
            f"all.adminpath {self.home / 'admin'}",
            f"all.pidpath {self.home / 'run'}",
            f"oss.localroot {self.data_dir}",
        ]
        if self.origin is None:
            return "\n".join(["# XRootD origin (generated)", *common, "all.export /store r/o", ""])
        origin_host = self.origin.rsplit(":", 1)[0]
        return "\n".join(
            [
                "# XCache (generated); forwarding exports serve the client proxy plugin",
                *common,
                "all.export /store r/o",
                "all.export /root:/ r/o",
                "all.export /xroot:/ r/o",
                "ofs.osslib libXrdPss.so",
                "pss.cachelib libXrdPfc.so",
                # "=" turns on forwarding mode (URLs in the path); permit keeps it to our origin.
                f"pss.origin = {self.origin}",
                f"pss.permit {origin_host}",
                *(f"pss.permit {host}" for host in self.upstream_caches),
                # Without these a dead origin stalls every cold read for minutes.
                "pss.setopt ConnectTimeout 5",
                "pss.setopt ConnectionRetry 1",
                "pfc.ram 1g",  # 5.5.3 rejects less
                "pfc.blocksize 1M",
                # XCache's default prefetches the whole file while it is open; 0 turns it off.
                *(["pfc.prefetch 0"] if self.lazy else []),
                "",
            ]
        )


def root_dir(cfg: FacilityConfig) -> Path:
    return cfg.state_dir / "xrootd"


def origin_data_dir(cfg: FacilityConfig) -> Path:
    """Where the dataset lives: ``/store/...`` maps to ``<this>/store/...``."""
    return root_dir(cfg) / "origin" / "data"


def servers(cfg: FacilityConfig) -> list[Server]:
    """The origin first, then the hub cache, then one cache per site that has its own."""
    origin = f"{cfg.origin_address}:{cfg.origin_port}"
    hub = cfg.hub_network
    paths = data_paths.load(cfg)
    lazy, tokens = paths.lazy, paths.tokens
    found = [
        Server("origin", root_dir(cfg) / "origin", cfg.origin_address, cfg.origin_port, hub,
               None, None, tokens=tokens),
        Server("cache-hub", root_dir(cfg) / "cache-hub", cfg.hub_cache_address, cfg.cache_port,
               hub, None, origin, lazy="cache-hub" in lazy, tokens=tokens),
    ]  # fmt: skip
    for site in cfg.sites:
        if site.own_cache:
            name = f"cache-{site.name}"
            found.append(
                Server(name, root_dir(cfg) / name, site.cache_address, cfg.cache_port,
                       site.network, site.netns, origin, site.router, lazy=name in lazy,
                       upstream_caches=(cfg.hub_cache_address,), tokens=tokens)
            )  # fmt: skip
    return found


def up(
    cfg: FacilityConfig,
    image: str,
    *,
    events: int = 1_000_000,
    files: int = 4,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Generate the dataset, start whatever is not running as configured, wait for the ports.

    Idempotent: a server already running with the same config is left alone, unless the dataset
    was regenerated, in which case caches restart with empty storage (they never revalidate).
    """
    from .images import user_in

    owner = user_in(image, XROOTD_USER)
    data = origin_data_dir(cfg)
    data.mkdir(parents=True, exist_ok=True)
    before = dataset.read_manifest(data), ttbar_dataset.read_manifest(data)
    dataset.generate(data, events=events, files=files)
    ttbar_dataset.generate(data)
    data_changed = (dataset.read_manifest(data), ttbar_dataset.read_manifest(data)) != before

    started: set[str] = set()
    for server in servers(cfg):
        same = _read(server.config_file) == server.config()
        fresh_data = data_changed and server.origin is not None
        if containers.running(server.container) and same and not fresh_data:
            _route(server)  # idempotent: a route lost since is put back
            continue
        _stop(server)
        env = _prepare(server, owner, cfg)
        log = cfg.logs / f"{server.daemon}.log"
        _keep_earlier(log)
        started.add(server.name)
        _start(server, image, log, env)
    for server in servers(cfg):
        _wait_ready(server, cfg, fresh=server.name in started, timeout=timeout)
    return status(cfg)


def _keep_earlier(log: Path) -> None:
    """Move a restarted server's log aside (``<name>.<n>.log``): the readiness check reads the
    new one from its start, and what the server said before stays for whoever looks (the
    suite's leak check reads every log of the facility)."""
    if not log.exists():
        return
    n = 1
    while (earlier := log.with_suffix(f".{n}.log")).exists():
        n += 1
    log.rename(earlier)


def _start(server: Server, image: str, log: Path, env: dict[str, str]) -> None:
    argv = [
        "podman", "run", "--detach", f"--name={server.container}", f"--label={LABEL}",
        f"--network={server.network}:ip={server.address},mac={server.mac}",
        f"--volume={server.home}:{server.home}",
        # xrootd's working directory must be writable by it (the SciTokens plugin writes there)
        f"--workdir={server.home}",
        *(f"--env={name}={value}" for name, value in env.items()),
        "--log-driver=k8s-file", f"--log-opt=path={log}",
        *([f"--dns={NO_DNS}"] if server.netns else []),
        image, "xrootd", "-n", server.name, "-c", str(server.config_file),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"starting xrootd {server.name} failed: {proc.stderr.strip()}")
    _route(server)


def _route(server: Server) -> None:
    """A server on a site's network gets the site's router as its default route.

    An internal network gives none; it is set from the host, since the image runs as xrootd,
    without the right to change its routes."""
    if not server.router:
        return
    pid = containers.pid(server.container)
    route = ["nsenter", "-t", pid, "-n", "ip", "route", "replace", "default", "via"]
    done = subprocess.run([*route, server.router], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"routing xrootd {server.name}: {done.stderr.strip()}")


def down(cfg: FacilityConfig) -> None:
    """Stop every server and remove their runtime files and caches; keep the origin's dataset."""
    for server in servers(cfg):
        _stop(server)
        if not server.home.is_dir():
            continue
        for entry in server.home.iterdir():
            if entry == origin_data_dir(cfg):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if server.origin is not None:
            server.home.rmdir()


def status(cfg: FacilityConfig) -> dict[str, Any]:
    """Per server: its container, URL, whether it accepts connections, its log."""
    result: dict[str, Any] = {}
    for server in servers(cfg):
        running = containers.running(server.container)
        result[server.name] = {
            "container": server.container if running else None,
            "url": server.url,
            "netns": server.netns,
            "listening": running and _listening(server),
            "log": str(cfg.logs / f"{server.daemon}.log"),
        }
    manifest = dataset.read_manifest(origin_data_dir(cfg))
    result["origin"]["dataset"] = manifest and {
        "files": [entry["lfn"] for entry in manifest["files"]],
        "events": manifest["spec"]["events"],
    }
    return result


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _prepare(server: Server, owner: tuple[int, int], cfg: FacilityConfig) -> dict[str, str]:
    """Fresh admin/run dirs (and an empty cache), all owned by the image's xrootd user; with
    tokens, its TLS and SciTokens files. Returns the environment its container needs."""
    if server.origin is not None:
        shutil.rmtree(server.data_dir, ignore_errors=True)
    for sub in ("admin", "run"):
        shutil.rmtree(server.home / sub, ignore_errors=True)
    for path in (server.home, server.home / "admin", server.home / "run", server.data_dir):
        path.mkdir(parents=True, exist_ok=True)
        if path != server.data_dir or server.origin is not None:
            os.chown(path, *owner)
    server.config_file.write_text(server.config())
    server.config_file.chmod(0o644)
    if not server.tokens:
        return {}
    return storage_tokens.prepare(
        cfg, server.name, server.home, [server.address], owner, is_cache=server.origin is not None
    )


def _stop(server: Server) -> None:
    # xrootd, as pid 1, ignores SIGTERM: waiting for it only delays the kill (nothing to save)
    containers.remove(server.container, grace=1)


def _listening(server: Server) -> bool:
    try:
        wait_for_port(server.address, server.port, timeout=0, netns=server.netns)
    except (TimeoutError, OSError, subprocess.TimeoutExpired):
        return False
    return True


def _wait_ready(server: Server, cfg: FacilityConfig, *, fresh: bool, timeout: float) -> None:
    """Wait until *this* server is up, failing at once (with the log's tail) if it died.

    The port alone is not proof of a fresh start: it must also log "initialization completed".
    """
    log = cfg.logs / f"{server.daemon}.log"
    deadline = time.monotonic() + timeout
    while True:
        text = _log_since(log, 0)
        running = containers.running(server.container)
        if running and "initialization failed" not in text:
            if (not fresh or "initialization completed" in text) and _listening(server):
                return
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
        tail = "\n".join(text.splitlines()[-15:]) or "(empty log)"
        raise RuntimeError(
            f"xrootd {server.name} is not serving {server.url}"
            f"{f' (seen from {server.netns})' if server.netns else ''}; {log}:\n{tail}"
        )


def _log_since(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
