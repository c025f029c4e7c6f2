"""The pool's root file system: Debian trixie with HTCondor, made once and cached.

Debian bookworm ships no HTCondor daemons and no Docker engine runs here, so the pool runs in a
chroot made by debootstrap. Building one takes about a minute; the result is kept in the cache
directory under a key made of everything that goes into it, so a changed recipe builds anew and
an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from .config import FacilityConfig

#: Bump when the recipe below changes in a way the key does not already see.
RECIPE_VERSION = 3
#: Libraries the host's Python needs inside the chroot (jobs run the project's own Python).
PYTHON_RUNTIME_PACKAGES = ("libnsl2", "libtirpc3t64", "ca-certificates", "procps")
#: What ROOT's C++ interpreter needs on a worker node: the C and C++ headers, and a compiler
#: driver it asks where they are. Without them every RDataFrame in a job fails to JIT.
ANALYSIS_PACKAGES = ("g++",)


class ProvisioningError(RuntimeError):
    """The root file system could not be made; the message says what to install or fix."""


def cache_key(cfg: FacilityConfig) -> str:
    recipe = {
        "version": RECIPE_VERSION,
        "suite": cfg.suite,
        "packages": sorted({*cfg.condor_packages, *PYTHON_RUNTIME_PACKAGES, *ANALYSIS_PACKAGES}),
        "users": list(cfg.users),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_path(cfg: FacilityConfig) -> Path:
    return cfg.cache_dir / f"rootfs-{cfg.suite}-{cache_key(cfg)}"


def host_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    """The Debian mirror this machine's apt already uses (None: debootstrap's default)."""
    candidates = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1)
            # The main Debian archive, not security updates nor third-party repositories.
            if uri.startswith("http") and uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return None


def _run(argv: list[str], what: str, **kwargs) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ProvisioningError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def ensure_rootfs(cfg: FacilityConfig, log=print) -> Path:
    """Return a ready root file system, building it if the cache has none for this recipe."""
    target = rootfs_path(cfg)
    if (target / ".rjq-ready").exists():
        return target
    if os.geteuid() != 0:
        raise ProvisioningError(
            "building the pool's root file system needs root (debootstrap, chroot)"
        )
    if shutil.which("debootstrap") is None:
        raise ProvisioningError("debootstrap is missing: apt-get install -y debootstrap")
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    if building.exists():
        _unmount_below(building)
        shutil.rmtree(building)
    mirror = host_debian_mirror()
    log(f"building the pool root file system ({cfg.suite}) in {target} …")
    argv = ["debootstrap", "--variant=minbase", cfg.suite, str(building)]
    if mirror:
        argv.append(mirror)
    _run(argv, "debootstrap")
    shutil.copy("/etc/resolv.conf", building / "etc/resolv.conf")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(
        ["chroot", str(building), "apt-get", "update", "-qq"],
        "apt-get update in the chroot",
        env=env,
    )
    packages = [*cfg.condor_packages, *PYTHON_RUNTIME_PACKAGES, *ANALYSIS_PACKAGES]
    _run(
        [
            "chroot",
            str(building),
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            *packages,
        ],
        "installing HTCondor in the chroot",
        env=env,
    )
    _run(["chroot", str(building), "apt-get", "clean"], "apt-get clean")
    for user in cfg.users:
        _run(["chroot", str(building), "useradd", "--create-home", user], f"useradd {user}")
    # Jobs run as ordinary users and must traverse to the bind-mounted Python and project.
    (building / "root").chmod(0o755)
    (building / ".rjq-ready").write_text(json.dumps({"key": cache_key(cfg)}))
    building.rename(target)
    prune_old(cfg, keep=target)
    return target


def prune_old(cfg: FacilityConfig, keep: Path) -> None:
    """Remove root file systems of older recipes (nothing may be mounted in them)."""
    for path in cfg.cache_dir.glob(f"rootfs-{cfg.suite}-*"):
        if path != keep and path.is_dir() and not _mounts_below(path):
            shutil.rmtree(path, ignore_errors=True)


def _mounts_below(path: Path) -> list[str]:
    prefix = os.path.realpath(path)
    mounts = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mountpoint = line.split()[1].replace("\\040", " ")
            if mountpoint == prefix or mountpoint.startswith(prefix + "/"):
                mounts.append(mountpoint)
    return mounts


def _unmount_below(path: Path) -> None:
    for mountpoint in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)


def mount_runtime(root: Path, binds: list[Path]) -> None:
    """Mount what daemons and jobs need: proc, sys, dev, shm, and read-only host paths."""
    unmount_runtime(root)
    plan = [
        ["mount", "-t", "proc", "proc", str(root / "proc")],
        ["mount", "--bind", "/sys", str(root / "sys")],
        ["mount", "--bind", "/dev", str(root / "dev")],
        ["mount", "-t", "tmpfs", "tmpfs", str(root / "dev/shm")],
    ]
    for argv in plan:
        _run(argv, " ".join(argv))
    for host_path in binds:
        inside = root / str(host_path).lstrip("/")
        inside.mkdir(parents=True, exist_ok=True)
        # Parents we create inside the chroot must be traversable by job users.
        parent = inside
        while parent != root:
            parent.chmod(parent.stat().st_mode | 0o755)
            parent = parent.parent
        _run(["mount", "--bind", str(host_path), str(inside)], f"bind-mounting {host_path}")
        _run(["mount", "-o", "remount,bind,ro", str(inside)], f"read-only {host_path}")


def missing_binds(root: Path, binds: list[Path]) -> list[Path]:
    """The host paths of ``binds`` not visible in the chroot (neither mounted nor below a mount)."""
    mounted = set(_mounts_below(root))
    missing = []
    for host_path in binds:
        inside = root / str(host_path).lstrip("/")
        # Every bind shows a host path at the same path inside, so one below a mount is visible.
        covering = [p for p in (inside, *inside.parents) if root in p.parents]
        if not any(os.path.realpath(p) in mounted for p in covering):
            missing.append(host_path)
    return missing


def bind_file(root: Path, source: Path, inside: str) -> None:
    """Show ``source`` at ``inside`` in the chroot, without touching the cached file beneath."""
    target = root / inside.lstrip("/")
    if not target.exists():
        target.touch()
    _run(["mount", "--bind", str(source), str(target)], f"bind-mounting {source} on {inside}")


def bind_writable(root: Path, host_path: Path) -> None:
    inside = root / str(host_path).lstrip("/")
    inside.mkdir(parents=True, exist_ok=True)
    _run(["mount", "--bind", str(host_path), str(inside)], f"bind-mounting {host_path}")


def unmount_runtime(root: Path) -> None:
    _unmount_below(root)
    leftover = _mounts_below(root)
    if leftover:
        raise ProvisioningError(f"could not unmount: {', '.join(leftover)}")
