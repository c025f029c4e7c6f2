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
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

#: Bump when the base recipes below change in a way their keys do not already see.
BASE_RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """How to build ``docker/<name>``: on which base, and with which context.

    ``base`` is a Debian base made here (:data:`BASES`) or another image of this table. Images
    of the product (``repository=True``) are built with the repository root as the context, as
    a facility would build them; the root ``.dockerignore`` lets only the product's sources in.
    """

    name: str
    base: str
    repository: bool = False


#: Debian bases made with debootstrap (no registry here): name -> (suite, extra packages).
#: ``python`` stands in for the registry's ``python:3.11-slim-bookworm``.
BASES = {
    "trixie": ("trixie", ()),
    "python": ("bookworm", ("python3", "python3-venv", "ca-certificates")),
}
RECIPES = {
    r.name: r
    for r in (
        Recipe("condor", "trixie"),
        Recipe("xrootd", "trixie"),
        Recipe("nat", "trixie"),
        Recipe("worker", "condor", repository=True),
        Recipe("gateway", "python", repository=True),
        Recipe("hub", "python", repository=True),
        Recipe("lab", "python", repository=True),
    )
}
#: What the facility runs (``T2_B``'s nodes are ``worker`` nodes, with a Python of their own).
IMAGES = ("condor", "xrootd", "nat", "worker")
#: The files of the repository a ``repository=True`` image sees besides its own directory.
PRODUCT_SOURCES = ("pyproject.toml", "README.md", "src")

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


def repository_dir() -> Path:
    """The root of this checkout (the facility is only ever installed from one)."""
    return Path(__file__).resolve().parents[3]


def docker_dir() -> Path:
    return repository_dir() / "docker"


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


def user_in(image: str, name: str) -> tuple[int, int]:
    """The uid and gid of ``name`` in ``image`` (a user its packages made there)."""
    proc = subprocess.run(
        ["podman", "run", "--rm", "--network=none", "--entrypoint=getent", image, "passwd", name],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ProvisioningError(f"user {name} does not exist in {image}: {proc.stderr.strip()}")
    fields = proc.stdout.strip().split(":")
    return int(fields[2]), int(fields[3])


def image_exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], capture_output=True).returncode == 0


def base_tag(name: str) -> str:
    suite, packages = BASES[name]
    recipe = f"{BASE_RECIPE_VERSION} {suite} minbase {' '.join(packages)}"
    return f"localhost/rjq-{name}:{suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def ensure_base(name: str, log: Log = print) -> str:
    """A local Debian base image (:data:`BASES`), made once with debootstrap."""
    tag = base_tag(name)
    if image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise ProvisioningError("debootstrap is not installed: run scripts/setup.sh")
    suite, packages = BASES[name]
    log(f"making the base image {tag} with debootstrap …")
    mirror = host_debian_mirror() or "http://deb.debian.org/debian"
    include = [f"--include={','.join(packages)}"] if packages else []
    with tempfile.TemporaryDirectory(prefix="rjq-base-") as tmp:
        root = Path(tmp) / "root"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", *include, suite, str(root), mirror],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-10:])
            raise ProvisioningError(f"debootstrap {suite} failed:\n{tail}")
        (root / "var/cache/apt/archives").mkdir(parents=True, exist_ok=True)
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        try:
            _podman("import", "-", tag, what="podman import", stdin=tar.stdout)
        finally:
            tar.stdout.close()  # a failed import must not leave tar blocked on a full pipe
            tar.wait()
        if tar.returncode != 0:
            _podman("rmi", tag, what="removing a partial base image")
            raise ProvisioningError(f"tar of the {suite} root file system failed")
    return tag


def _inputs(recipe: Recipe, root: Path) -> list[tuple[str, Path]]:
    """Every file that goes into the image, by its name in the build context."""
    trees = [root / "docker" / recipe.name]
    if recipe.repository:
        trees += [root / name for name in PRODUCT_SOURCES]
    files = []
    for tree in trees:
        found = [tree] if tree.is_file() else sorted(p for p in tree.rglob("*") if p.is_file())
        files += [
            (str(path.relative_to(root if recipe.repository else tree)), path)
            for path in found
            if "__pycache__" not in path.parts
        ]
    return files


def image_tag(name: str, base: str, root: Path | None = None) -> str:
    """``localhost/rjq-<name>:<hash of the base and of every file that goes in>``, the files
    of the checkout at ``root`` (this one by default)."""
    digest = hashlib.sha256(base.encode())
    for relative, path in _inputs(RECIPES[name], root or repository_dir()):
        digest.update(relative.encode() + b"\0" + path.read_bytes())
    return f"localhost/rjq-{name}:{digest.hexdigest()[:12]}"


def _base_of(recipe: Recipe, log: Log) -> str:
    if recipe.base in BASES:
        return ensure_base(recipe.base, log)
    return ensure_image(recipe.base, log)


def build_volumes(scratch: Path) -> list[str]:
    """What builds here need from the host: its CA bundle, for pip (this machine reaches
    package indexes through a TLS-inspecting proxy). Docker users elsewhere need none of it.
    The pip configuration that names it is written into ``scratch``, a directory of the build's
    own."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return []
    conf = scratch / "pip.conf"
    conf.write_text("[global]\ncert = /run/rjq-build/ca.crt\n")
    conf.chmod(0o644)
    return [f"--volume={bundle}:/run/rjq-build/ca.crt:ro", f"--volume={conf}:/etc/pip.conf:ro"]


_building = {name: threading.Lock() for name in RECIPES}


def ensure_image(name: str, log: Log = print) -> str:
    """Build ``docker/<name>`` on its base unless an image of the same inputs exists.

    One build per image at a time: images built side by side may share a base image."""
    with _building[name]:
        return _ensure_image(name, log)


def _ensure_image(name: str, log: Log) -> str:
    recipe = RECIPES[name]
    base = _base_of(recipe, log)
    tag = image_tag(name, base)
    if image_exists(tag):
        return tag
    if recipe.repository and os.environ.get("RJQ_REUSE_IMAGES"):
        # For development only: an edit of src/ would otherwise rebuild the product's images
        # (and restart the facility) on every test run; the nodes mount src/ anyway.
        older = _tags_of(tag.rsplit(":", 1)[0])
        if older:
            log(f"RJQ_REUSE_IMAGES: using {older[0]} for {name}, not rebuilding")
            return older[0]
    log(f"building {tag} from docker/{name} …")
    with tempfile.TemporaryDirectory(prefix=f"rjq-build-{name}-") as scratch:
        os.chmod(scratch, 0o755)
        if recipe.repository:
            where = ["--file", str(docker_dir() / name / "Dockerfile")]
            where += build_volumes(Path(scratch))
            context = repository_dir()
        else:
            where, context = [], docker_dir() / name
        _build(name, tag, base, where, context)
    prune_older(tag)
    return tag


def _build(name: str, tag: str, base: str, where: list[str], context: Path) -> None:
    _podman(
        "build",
        "--build-arg",
        f"BASE={base}",
        "--tag",
        tag,
        "--label",
        "org.remote-jobqueue.facility=1",
        *where,
        str(context),
        what=f"podman build docker/{name}",
        timeout=1800,
    )


def _tags_of(repository: str) -> list[str]:
    proc = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repository],
        capture_output=True,
        text=True,
    )
    return proc.stdout.split()


def prune_older(tag: str) -> None:
    """Remove the other tags of the same image (older recipes) that no container uses."""
    for old in _tags_of(tag.rsplit(":", 1)[0]):
        if old != tag:
            subprocess.run(["podman", "rmi", old], capture_output=True)


def ensure_images(names: Iterable[str] = IMAGES, log: Log = print) -> dict[str, str]:
    """The images ``names``, built where missing: name → tag."""
    names = tuple(names)
    for base in {RECIPES[n].base for n in names} & set(BASES):
        ensure_base(base, log)
    # Side by side: each build mostly waits on the Debian mirror or a package index.
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        tags = pool.map(lambda name: ensure_image(name, log), names)
        return dict(zip(names, tags, strict=True))


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
