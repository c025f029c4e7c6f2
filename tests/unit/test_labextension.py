"""The JupyterLab side of remote-jobqueue: the prebuilt `remote-jobqueue-lab` extension and the
config that turns the server extension on.

Specification: the build output (scripts/build-labextension.sh) is a prebuilt extension named
`remote-jobqueue-lab` whose entry point exists, built from the sources and lockfile as they are
now (its stamp matches them); the source package is that extension, built with
@jupyterlab/builder into the package; the server config enables `remote_jobqueue.lab`, which
names itself as its extension point.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from remote_jobqueue import lab

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "labextension"
BUILT = ROOT / "src/remote_jobqueue/lab/labextension"
SERVER_CONFIG = ROOT / "jupyter-config/jupyter_server_config.d/remote_jobqueue.json"
BUILD_INPUTS = ("src", "style", "package.json", "package-lock.json", "tsconfig.json")
HINT = "run scripts/build-labextension.sh"


def sources_hash() -> str:
    """What scripts/build-labextension.sh stamps: sha256sum of the sorted sha256sum lines."""
    files = []
    for name in BUILD_INPUTS:
        path = SOURCE / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    rels = sorted(str(p.relative_to(SOURCE)) for p in files)
    lines = "".join(f"{hashlib.sha256((SOURCE / r).read_bytes()).hexdigest()}  {r}\n" for r in rels)
    return hashlib.sha256(lines.encode()).hexdigest()


def test_the_built_extension_is_remote_jobqueue_lab_with_its_entry_point() -> None:
    assert (BUILT / "package.json").is_file(), f"no prebuilt extension in {BUILT}: {HINT}"
    built = json.loads((BUILT / "package.json").read_text())
    assert built["name"] == "remote-jobqueue-lab"
    assert (BUILT / built["jupyterlab"]["_build"]["load"]).is_file()


def test_the_built_extension_is_that_of_the_sources_as_they_are() -> None:
    stamp = SOURCE / ".build-stamp"
    assert stamp.is_file(), HINT
    assert stamp.read_text().strip() == sources_hash(), f"the sources changed since: {HINT}"


def test_the_source_package_builds_into_the_python_package() -> None:
    package = json.loads((SOURCE / "package.json").read_text())
    assert package["name"] == "remote-jobqueue-lab"
    assert "@jupyterlab/builder" in package["devDependencies"]
    assert (SOURCE / package["jupyterlab"]["outputDir"]).resolve() == BUILT
    assert (SOURCE / "package-lock.json").is_file()


def test_the_server_config_enables_the_server_extension() -> None:
    config = json.loads(SERVER_CONFIG.read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {"remote_jobqueue.lab": True}}}
    assert lab._jupyter_server_extension_points() == [{"module": "remote_jobqueue.lab"}]
