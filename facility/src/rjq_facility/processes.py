"""Background processes of the facility: start detached, remember by pid file, stop for sure.

`up` returns while the daemons go on, so each one is started in its own session with its output
in a log file, and `down` finds it again through its pid file (or, for daemons that fork, by
what they are).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def netns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def start_daemon(
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    log_dir: Path,
    *,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached (optionally inside ``netns``); return its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [*netns_prefix(netns), *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    log.close()
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def pid_of(name: str, run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / f"{name}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop_daemon(name: str, run_dir: Path, timeout: float = 10.0) -> None:
    """Stop a daemon started by :func:`start_daemon`, with its whole process group."""
    pidfile = run_dir / f"{name}.pid"
    pid = pid_of(name, run_dir)
    if pid is not None:
        kill_group_or_pid(pid, timeout)
    pidfile.unlink(missing_ok=True)


def kill_group_or_pid(pid: int, timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.1)


def wait_for_port(host: str, port: int, timeout: float = 30.0, netns: str | None = None) -> None:
    """Wait until something accepts TCP connections at host:port (from ``netns`` if given)."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        if netns is None:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError as err:
                last = err
        else:
            probe = subprocess.run(
                [*netns_prefix(netns), "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"],
                capture_output=True,
                timeout=5,
            )
            if probe.returncode == 0:
                return
            last = OSError(probe.stderr.decode(errors="replace").strip())
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answers at {host}:{port} after {timeout:.0f} s: {last}")
        time.sleep(0.2)


def pids_in_netns(netns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def pids_in_netns_any(cfg) -> list[int]:
    """Every process in one of the facility's namespaces: the sites' and the outside one."""
    names = [site.netns for site in cfg.sites if site.netns] + [cfg.outside_netns]
    return [pid for name in names for pid in pids_in_netns(name)]
