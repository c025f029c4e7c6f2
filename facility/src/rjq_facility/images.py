"""The images of ``docker/``, built here with podman: no Docker engine, no registry.

Every Dockerfile takes its base image as ``ARG BASE``. Where a registry is reachable that is
``debian:trixie-slim``. Here the base is made with ``debootstrap --variant=minbase`` and
``podman import``, so the same files build on both. Each image is tagged with a hash of what
goes into it: its base, and every file of its directory. So a changed Dockerfile builds anew,
and an unchanged one is found and reused, between runs too (podman keeps its images in
``/var/lib/containers``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .config import FacilityConfig

#: The images of docker/ the facility builds, in build order (``worker`` needs a published
#: remote-jobqueue or a wheel, and the facility serves software from a read-only area instead).
IMAGES = ("condor", "xrootd", "nat")
#: Bump when the base recipe below changes in a way the key does not already see.
BASE_RECIPE_VERSION = 1

Log = Callable[[str], None]


class ProvisioningError(RuntimeError):
    """An image could not be made; the message says what to install or fix."""


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


def docker_dir() -> Path:
    """``docker/`` of this checkout (the facility is only ever installed from one)."""
    return Path(__file__).resolve().parents[3] / "docker"


def _podman(*args: str, what: str, timeout: float = 900, **kwargs) -> str:
    if shutil.which("podman") is None:
        raise ProvisioningError("podman is not installed: run scripts/setup.sh")
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ProvisioningError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], capture_output=True).returncode == 0


def base_tag(cfg: FacilityConfig) -> str:
    key = hashlib.sha256(f"{BASE_RECIPE_VERSION} {cfg.suite} minbase".encode()).hexdigest()
    return f"localhost/rjq-base:{cfg.suite}-{key[:12]}"


def ensure_base(cfg: FacilityConfig, log: Log = print) -> str:
    """The local base image (Debian ``cfg.suite``, minbase), made once."""
    tag = base_tag(cfg)
    if image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ProvisioningError("debootstrap is not installed: run scripts/setup.sh")
    log(f"making the base image {tag} with debootstrap …")
    mirror = host_debian_mirror() or "http://deb.debian.org/debian"
    with tempfile.TemporaryDirectory(prefix="rjq-base-") as tmp:
        root = Path(tmp) / "root"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", cfg.suite, str(root), mirror],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-10:])
            raise ProvisioningError(f"debootstrap {cfg.suite} failed:\n{tail}")
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        try:
            _podman("import", "-", tag, what="podman import", stdin=tar.stdout)
        finally:
            tar.wait()
    return tag


def image_tag(name: str, base: str, directory: Path | None = None) -> str:
    """``localhost/rjq-<name>:<hash of the base and of every file of docker/<name>>``."""
    directory = directory or docker_dir() / name
    digest = hashlib.sha256(base.encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return f"localhost/rjq-{name}:{digest.hexdigest()[:12]}"


def ensure_image(cfg: FacilityConfig, name: str, log: Log = print) -> str:
    """Build ``docker/<name>`` on the local base unless an image of the same inputs exists."""
    base = ensure_base(cfg, log)
    tag = image_tag(name, base)
    if image_exists(tag):
        return tag
    log(f"building {tag} from docker/{name} …")
    _podman(
        "build",
        "--build-arg",
        f"BASE={base}",
        "--tag",
        tag,
        "--label",
        "org.remote-jobqueue.facility=1",
        str(docker_dir() / name),
        what=f"podman build docker/{name}",
    )
    prune_older(tag)
    return tag


def prune_older(tag: str) -> None:
    """Remove the other tags of the same image (older recipes) that no container uses."""
    repository = tag.rsplit(":", 1)[0]
    proc = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repository],
        capture_output=True,
        text=True,
    )
    for old in proc.stdout.split():
        if old != tag:
            subprocess.run(["podman", "rmi", old], capture_output=True)


def ensure_images(cfg: FacilityConfig | None = None, log: Log = print) -> dict[str, str]:
    """Every image of :data:`IMAGES`, built where missing: name → tag."""
    cfg = cfg or FacilityConfig()
    ensure_base(cfg, log)
    # Side by side: each build mostly waits on the Debian mirror.
    with ThreadPoolExecutor(max_workers=len(IMAGES)) as pool:
        tags = pool.map(lambda name: ensure_image(cfg, name, log), IMAGES)
        return dict(zip(IMAGES, tags, strict=True))


#: Labels on every container and network the facility or its tests make.
LABELS = ("org.remote-jobqueue.facility", "org.remote-jobqueue.test")


def _listed(*args: str, field: str = "Name") -> list[str]:
    if shutil.which("podman") is None:
        return []
    names: list[str] = []
    for label in LABELS:
        proc = subprocess.run(
            ["podman", *args, "--filter", f"label={label}", "--format", f"{{{{.{field}}}}}"],
            capture_output=True,
            text=True,
        )
        names += proc.stdout.split()
    return sorted(set(names))


def containers() -> list[str]:
    """The facility's (and its tests') containers on this machine, running or not."""
    return _listed("ps", "-a", field="Names")


def networks() -> list[str]:
    """The facility's (and its tests') podman networks on this machine."""
    return _listed("network", "ls")
