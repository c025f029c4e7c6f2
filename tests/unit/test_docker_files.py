"""The files of ``docker/`` as a facility would use them: linted Dockerfiles, a valid compose file.

Specification: every Dockerfile passes hadolint (with the repository's ``.hadolint.yaml``) and
takes its base image as ``ARG BASE`` or builds on another image of ours; the compose file
parses with podman-compose and brings up the facility's topology: a central manager and
``T2_LOCAL`` on the hub network, ``T2_A`` and ``T2_B`` each on a network of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))
BIN = Path(sys.executable).parent


def test_there_are_dockerfiles_for_the_pools_roles() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= {"condor", "xrootd", "worker"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_dockerfile_lints_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or "hadolint"
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_dockerfile_takes_its_base_as_a_build_argument(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "ARG BASE=" in text or "ARG CONDOR_IMAGE=" in text, "FROM a build argument"


def test_the_compose_file_parses_and_has_the_facilitys_topology() -> None:
    compose = shutil.which("podman-compose", path=str(BIN)) or "podman-compose"
    done = subprocess.run(
        [compose, "-f", str(ROOT / "docker" / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    sites = {
        name: service["environment"].get("RJQ_SITE")
        for name, service in services.items()
        if service.get("environment", {}).get("RJQ_ROLE") == "execute"
    }
    assert sites == {"t2-local": "T2_LOCAL", "t2-a": "T2_A", "t2-b": "T2_B"}

    def networks(name: str) -> set[str]:
        return set(services[name]["networks"])

    assert networks("central-manager") == networks("t2-local") == {"hub"}
    assert networks("t2-a") == {"site-a"} and networks("t2-b") == {"site-b"}
    assert not any(s.get("ports") for s in services.values()), "sites publish nothing"
