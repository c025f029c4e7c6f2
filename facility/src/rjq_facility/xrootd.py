"""The facility's XRootD servers: one origin and the caches (XCache) in front of it.

The origin on the hub side exports ``/store`` (the generated dataset). A hub-side cache serves the
notebook and the sites without a cache; each site with ``own_cache`` gets its own cache inside
its network namespace, so its jobs read through a server in their own network, as at a real
site. Clients are sent to a cache by the proxy plugin (:mod:`remote_jobqueue.data`), which
rewrites ``root://origin//store/f`` to ``root://cache//root://origin//store/f``: that is why the
caches also export ``/root:/`` and ``/xroot:/`` (forwarding mode).

xrootd refuses to run as root, so every server runs as user ``xrootd`` (``-R``), and every
directory it writes is owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rjq_facility import dataset
from rjq_facility.config import FacilityConfig
from rjq_facility.processes import (
    kill_group_or_pid,
    pid_of,
    start_daemon,
    stop_daemon,
    wait_for_port,
)

XROOTD_USER = "xrootd"
XROOTD_BIN = "/usr/bin/xrootd"


@dataclass(frozen=True)
class Server:
    """One xrootd instance: where it listens and where it keeps its files."""

    name: str
    #: ``<state>/xrootd/<name>``: config, admin and pid dirs, plus data (origin) or cache.
    home: Path
    address: str
    port: int
    netns: str | None
    #: ``host:port`` of the origin for a cache, ``None`` for the origin itself.
    origin: str | None

    @property
    def daemon(self) -> str:
        return f"xrootd-{self.name}"

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
                # Without these a dead origin stalls every cold read for minutes.
                "pss.setopt ConnectTimeout 5",
                "pss.setopt ConnectionRetry 1",
                "pfc.ram 1g",  # 5.5.3 rejects less
                "pfc.blocksize 1M",
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
    origin = f"{cfg.hub_address}:{cfg.origin_port}"
    found = [
        Server("origin", root_dir(cfg) / "origin", cfg.hub_address, cfg.origin_port, None, None),
        Server(
            "cache-hub", root_dir(cfg) / "cache-hub", cfg.hub_address, cfg.cache_port, None, origin
        ),
    ]
    for site in cfg.sites:
        if site.own_cache:
            name = f"cache-{site.name}"
            found.append(
                Server(name, root_dir(cfg) / name, site.address, cfg.cache_port, site.netns, origin)
            )
    return found


def up(
    cfg: FacilityConfig, *, events: int = 1_000_000, files: int = 4, timeout: float = 30.0
) -> dict[str, Any]:
    """Generate the dataset, start whatever is not running as configured, wait for the ports.

    Idempotent: a server already running with the same config is left alone, unless the dataset
    was regenerated, in which case caches restart with empty storage (they never revalidate).
    """
    user = pwd.getpwnam(XROOTD_USER)
    _check_traversable(cfg.state_dir, user)
    data = origin_data_dir(cfg)
    data.mkdir(parents=True, exist_ok=True)
    before = dataset.read_manifest(data)
    dataset.generate(data, events=events, files=files)
    data_changed = dataset.read_manifest(data) != before

    started: dict[str, int] = {}  # server name -> log offset at its start
    for server in servers(cfg):
        pid = pid_of(server.daemon, cfg.run)
        same = _read(server.config_file) == server.config()
        if pid is not None and same and not (data_changed and server.origin is not None):
            continue
        _stop(server, cfg)
        _prepare(server, user)
        log = cfg.logs / f"{server.daemon}.log"
        started[server.name] = log.stat().st_size if log.exists() else 0
        start_daemon(
            server.daemon,
            [XROOTD_BIN, "-R", XROOTD_USER, "-n", server.name, "-c", str(server.config_file)],
            cfg.run,
            cfg.logs,
            netns=server.netns,
            cwd=server.home,
        )
    for server in servers(cfg):
        _wait_ready(server, cfg, started.get(server.name), timeout)
    return status(cfg)


def down(cfg: FacilityConfig) -> None:
    """Stop every server and remove their runtime files and caches; keep the origin's dataset."""
    for server in servers(cfg):
        _stop(server, cfg)
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
    """Per server: pid, URL, network namespace, whether it accepts connections, its log."""
    result: dict[str, Any] = {}
    for server in servers(cfg):
        pid = pid_of(server.daemon, cfg.run)
        result[server.name] = {
            "pid": pid,
            "url": server.url,
            "netns": server.netns,
            "listening": pid is not None and _listening(server),
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


def _prepare(server: Server, user: pwd.struct_passwd) -> None:
    """Fresh admin/run dirs (and an empty cache), all owned by the xrootd user."""
    if server.origin is not None:
        shutil.rmtree(server.data_dir, ignore_errors=True)
    for sub in ("admin", "run"):
        shutil.rmtree(server.home / sub, ignore_errors=True)
    for path in (server.home, server.home / "admin", server.home / "run", server.data_dir):
        path.mkdir(parents=True, exist_ok=True)
        if path != server.data_dir or server.origin is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
    server.config_file.write_text(server.config())


def _stop(server: Server, cfg: FacilityConfig) -> None:
    stop_daemon(server.daemon, cfg.run)
    # A server whose pid file was lost is still found by its (unique) config path.
    for pid in _pids_with_config(server.config_file):
        kill_group_or_pid(pid)


def _pids_with_config(config_file: Path) -> list[int]:
    wanted = os.fsencode(str(config_file))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"xrootd" and wanted in argv:
            found.append(int(entry.name))
    return found


def _listening(server: Server) -> bool:
    try:
        wait_for_port(server.address, server.port, timeout=0, netns=server.netns)
    except (TimeoutError, OSError):
        return False
    return True


def _wait_ready(
    server: Server, cfg: FacilityConfig, log_offset: int | None, timeout: float
) -> None:
    """Wait until *this* server is up, failing at once (with the log's tail) if it died.

    The port alone is not proof: a stale server may hold it while ours failed to bind, so a
    fresh start must also log "initialization completed".
    """
    log = cfg.logs / f"{server.daemon}.log"
    deadline = time.monotonic() + timeout
    while True:
        text = _log_since(log, log_offset or 0)
        pid = pid_of(server.daemon, cfg.run)
        # A server that was already running is judged by its port, not by old log lines.
        fresh_failure = log_offset is not None and "initialization failed" in text
        if pid is not None and not fresh_failure:
            if (log_offset is None or "initialization completed" in text) and _listening(server):
                return
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
        tail = "\n".join(text.splitlines()[-15:]) or "(empty log)"
        raise RuntimeError(
            f"xrootd {server.name} is not serving {server.url}"
            f"{f' in netns {server.netns}' if server.netns else ''}; {log}:\n{tail}"
        )


def _log_since(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _check_traversable(directory: Path, user: pwd.struct_passwd) -> None:
    """Fail early and clearly if the xrootd user cannot reach the state dir."""
    for parent in [directory.resolve(), *directory.resolve().parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        ok = (
            st.st_mode & stat.S_IXOTH
            or (st.st_uid == user.pw_uid and st.st_mode & stat.S_IXUSR)
            or (st.st_gid == user.pw_gid and st.st_mode & stat.S_IXGRP)
        )
        if not ok:
            raise PermissionError(
                f"user {user.pw_name} cannot traverse {parent} (mode {st.st_mode & 0o7777:o}), "
                f"so xrootd cannot use {directory}; make it world-traversable or move the state dir"
            )
