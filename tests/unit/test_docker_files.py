"""The files of ``docker/`` as a facility would use them: linted Dockerfiles, a valid compose file.

Specification: every Dockerfile passes hadolint (with the repository's ``.hadolint.yaml``) and
takes its base image as ``ARG BASE`` or builds on another image of ours; the compose file
parses with podman-compose and brings up the facility's topology: a central manager and
``T2_LOCAL`` on the hub network, ``T2_A`` and ``T2_B`` each on a network of its own.

The product's images (issue 11: ``hub``, ``gateway``, ``lab``) build with the repository root as
the context and install remote-jobqueue from it, never the facility; the gateway runs as a
user of its own and reads its host key from a mounted file; the lab has dask-labextension
and the site picker.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))
BIN = Path(sys.executable).parent


#: The product's images, built with the repository root as the context.
PRODUCT_IMAGES = ("hub", "gateway", "lab")


def test_there_are_dockerfiles_for_the_pools_roles() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= {"condor", "xrootd", "worker"}


def test_there_are_dockerfiles_for_the_products_images() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= set(PRODUCT_IMAGES)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [
        line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def dockerignored(path: str) -> bool:
    """Docker's rule for the root .dockerignore: the last pattern matching the path or one of
    its parent directories decides (``!`` lets it through)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        cleaned = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, cleaned) for c in candidates):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("name", PRODUCT_IMAGES)
def test_product_images_install_the_checkout_and_never_the_facility(name: str) -> None:
    steps = final_stage(ROOT / "docker" / name / "Dockerfile")
    sources = [
        src
        for word, args in steps
        if word in {"COPY", "ADD"}
        for src in args.split()[:-1]
        if not src.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "src/"} <= set(sources)
    # The wheel's own inputs (jupyter-config/: the server extension's config it ships).
    product = {"pyproject.toml", "README.md", "src/", "jupyter-config/"}
    for src in sources:
        assert src in product or src.startswith(f"docker/{name}/")
        assert (ROOT / src).exists(), src
        assert not dockerignored(src), f"{src} is left out of the build context"
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    assert any("/tmp/remote-jobqueue" in args for args in installs)
    assert not any("facility" in args for word, args in steps)


def test_the_build_context_leaves_out_the_facility_tests_and_virtualenvs() -> None:
    for path in (
        "facility/pyproject.toml",
        "facility/src/rjq_facility/images.py",
        "tests/unit",
        ".venv/bin/python",
        ".git/config",
        "docker/condor/Dockerfile",
        "src/remote_jobqueue/__pycache__/cluster.cpython-311.pyc",
    ):
        assert dockerignored(path), path
    for path in (
        "pyproject.toml",
        "README.md",
        "src/remote_jobqueue/cluster.py",
        "src/remote_jobqueue/remote-jobqueue-schema.yaml",
    ):
        assert not dockerignored(path), path


def test_the_gateway_image_runs_as_a_user_of_its_own() -> None:
    steps = final_stage(ROOT / "docker" / "gateway" / "Dockerfile")
    users = [args for word, args in steps if word == "USER"]
    assert users, "a USER instruction"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert re.search(rf"useradd --uid {user} .*gateway", " ".join(a for _, a in steps))
    assert ("EXPOSE", "2222") in steps
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "RJQ_GATEWAY_HOST_KEY=" in env
    assert ("ENTRYPOINT", '["/usr/local/bin/rjq-gateway"]') in steps


def test_the_lab_image_has_the_dask_panel_and_the_site_picker_installed_and_checked() -> None:
    steps = final_stage(ROOT / "docker" / "lab" / "Dockerfile")
    runs = [args for word, args in steps if word == "RUN"]
    extras = next(args for word, args in steps if word == "ARG" and args.startswith("EXTRAS="))
    # lab: JupyterLab, dask-labextension, jupyter-server-proxy, ipywidgets (pyproject.toml).
    assert {"hub", "analysis", "root", "lab"} <= set(extras.removeprefix("EXTRAS=").split(","))
    assert any("pip install" in r and '"coffea>=' in r for r in runs)
    checks = " ".join(r for r in runs if "extension list" in r)
    for enabled in (
        'labextension list 2>&1 | grep -E "dask-labextension .*enabled',
        'labextension list 2>&1 | grep -E "remote-jobqueue-lab .*enabled',
        'server extension list 2>&1 | grep -E "dask_labextension .*enabled',
        'server extension list 2>&1 | grep -E "remote_jobqueue.lab .*enabled',
    ):
        assert enabled in checks, enabled
    assert ("COPY", "jupyter-config/ /tmp/remote-jobqueue/jupyter-config/") in steps
    assert ("CMD", '["jupyterhub-singleuser"]') in steps


def test_the_labs_new_cluster_button_makes_remote_clusters() -> None:
    import importlib

    config = yaml.safe_load((ROOT / "docker" / "lab" / "dask-labextension.yaml").read_text())
    factory = config["labextension"]["factory"]
    cluster_class = getattr(importlib.import_module(factory["module"]), factory["class"])
    assert cluster_class.__name__ == "RemoteHTCondorCluster"


# The gateway's entrypoint, run for real with a stand-in for the gateway ---------------------

FAKE_GATEWAY = """#!/bin/sh
key=$3
printf '%s\n' "$@" > "$RJQ_TEST_ARGS"
stat -c '%a %u' "$key" >> "$RJQ_TEST_ARGS"
cat "$key" >> "$RJQ_TEST_ARGS"
"""


def run_gateway_entrypoint(tmp_path: Path, key: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "remote-jobqueue"
    fake.write_text(FAKE_GATEWAY)
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "RJQ_GATEWAY_HOST_KEY": str(key),
        "RJQ_GATEWAY_RUNTIME_DIR": str(tmp_path / "run"),
        "RJQ_TEST_ARGS": str(tmp_path / "args"),
    }
    script = ROOT / "docker" / "gateway" / "entrypoint.sh"
    return subprocess.run(
        ["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_the_gateway_reads_a_private_copy_of_the_mounted_host_key(tmp_path: Path) -> None:
    secret = tmp_path / "secret" / "host-key"
    secret.parent.mkdir()
    secret.write_text("KEY MATERIAL\n")
    secret.chmod(0o440)  # a Secret volume's file under fsGroup: the gateway would refuse it
    done = run_gateway_entrypoint(tmp_path, secret, "--issuer", "https://idp.example")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "args").read_text().splitlines()
    copy = tmp_path / "run" / "host-key"
    assert lines[:4] == ["gateway", "--host-key", str(copy), "--issuer"]
    assert lines[-2] == f"600 {os.geteuid()}" and lines[-1] == "KEY MATERIAL"
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE(secret.stat().st_mode) == 0o440, "the mounted file is left as it is"


def test_the_gateway_refuses_to_start_without_its_host_key(tmp_path: Path) -> None:
    done = run_gateway_entrypoint(tmp_path, tmp_path / "missing")
    assert done.returncode == 2
    assert "no readable host key" in done.stderr
    assert not (tmp_path / "args").exists(), "no gateway (it would make a key nobody pinned)"


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
