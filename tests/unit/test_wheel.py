"""The `remote_jobqueue` wheel holds the product only: no development facility in it.

Specification: the wheel built from this checkout has only the package `remote_jobqueue`, its
metadata and its shared data; no file path in it contains any of `FORBIDDEN_IN_PATHS`; no file
of the package names any of `FORBIDDEN_IN_FILES` (the facility's package, its root file system
tool, its firewall); no module imports `rjq_facility`; and the wheel's entry points name none
of it. Its shared data is JupyterLab's: the prebuilt `remote-jobqueue-lab` extension where
JupyterLab finds prebuilt extensions, and the config that enables the server extension.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_PATHS = ("facility", "issuer", "debootstrap", "rootfs", "nftables")
FORBIDDEN_IN_FILES = ("rjq_facility", "debootstrap", "nftables")
DATA = "remote_jobqueue-0.1.0.data/data/"
LABEXTENSION = DATA + "share/jupyter/labextensions/remote-jobqueue-lab/"
SERVER_CONFIG = DATA + "etc/jupyter/jupyter_server_config.d/remote_jobqueue.json"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel of this checkout: built with the installed hatchling (the [dev] extra has it)
    when there is one, else in pip's isolated build environment."""
    out = tmp_path_factory.mktemp("wheel")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", out, ROOT],
        check=True,
        capture_output=True,
        timeout=110,
    )
    (path,) = out.glob("remote_jobqueue-*.whl")
    with zipfile.ZipFile(path) as whl:
        yield whl


def package_files(whl: zipfile.ZipFile) -> list[str]:
    return [name for name in whl.namelist() if name.startswith("remote_jobqueue/")]


def test_the_wheel_is_the_package_and_its_metadata(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {
        "remote_jobqueue",
        "remote_jobqueue-0.1.0.dist-info",
        "remote_jobqueue-0.1.0.data",
    }
    assert "remote_jobqueue/cli.py" in wheel.namelist()
    assert "remote_jobqueue/lab/handlers.py" in wheel.namelist()


def test_the_wheel_installs_the_prebuilt_labextension(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert LABEXTENSION + "package.json" in names, "build it: scripts/build-labextension.sh"
    package = json.loads(wheel.read(LABEXTENSION + "package.json"))
    assert package["name"] == "remote-jobqueue-lab"
    assert LABEXTENSION + package["jupyterlab"]["_build"]["load"] in names


def test_the_wheel_enables_the_server_extension(wheel: zipfile.ZipFile) -> None:
    config = json.loads(wheel.read(SERVER_CONFIG))
    assert config["ServerApp"]["jpserver_extensions"] == {"remote_jobqueue.lab": True}


def test_no_path_in_the_wheel_is_of_the_facility(wheel: zipfile.ZipFile) -> None:
    found = [n for n in wheel.namelist() if any(w in n.lower() for w in FORBIDDEN_IN_PATHS)]
    assert found == []


def test_no_file_of_the_package_names_the_facility(wheel: zipfile.ZipFile) -> None:
    found = [
        (name, word)
        for name in package_files(wheel)
        for word in FORBIDDEN_IN_FILES
        if word in wheel.read(name).decode(errors="replace").lower()
    ]
    assert found == []


def test_no_module_imports_the_facility(wheel: zipfile.ZipFile) -> None:
    imports = []
    for name in package_files(wheel):
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(wheel.read(name), name)):
            if isinstance(node, ast.Import):
                imports += [(name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                imports += [(name, f"{module}.{alias.name}") for alias in node.names]
    assert imports, "no import found: the wheel's modules were not read"
    assert [(n, m) for n, m in imports if "facility" in m] == []


def test_the_wheels_entry_points_name_no_facility(wheel: zipfile.ZipFile) -> None:
    text = wheel.read("remote_jobqueue-0.1.0.dist-info/entry_points.txt").decode()
    assert "remote-jobqueue = remote_jobqueue.cli:main" in text
    assert "facility" not in text
