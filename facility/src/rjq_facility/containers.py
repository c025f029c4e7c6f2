"""The few podman operations on the facility's containers that every part needs.

The pool's nodes (`condor`), the sites' routers (`network`) and the XRootD servers (`xrootd`)
are all containers started, inspected and removed the same way.
"""

from __future__ import annotations

import subprocess


def slug(name: str) -> str:
    """A site's or a role's name as a container, network or host name: ``T2_A`` → ``t2-a``."""
    return name.lower().replace("_", "-")


def _inspect(container: str, field: str) -> str | None:
    proc = subprocess.run(
        ["podman", "inspect", "--format", f"{{{{.State.{field}}}}}", container],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def running(container: str) -> bool:
    return _inspect(container, "Running") == "true"


def pid(container: str) -> str:
    """The host pid of the container's first process (its network namespace's holder)."""
    found = _inspect(container, "Pid")
    if not found or found == "0":
        raise RuntimeError(f"container {container} is not running")
    return found


def remove(*containers: str, grace: int = 10) -> None:
    """Remove the containers, running or not, whichever of them exist."""
    if containers:
        subprocess.run(
            ["podman", "rm", "--force", "--ignore", "--time", str(grace), *containers],
            capture_output=True,
        )
