"""The images of ``docker/``, built here with podman from a debootstrap base, and run.

Specification (issue "The dockerized mini pool"): the README's test command builds every image
the facility uses from ``docker/`` (cached by content: a second build is a lookup). The condor
image makes a pool: a central manager with the schedd, and an execute node of a named site on
a podman network, which joins with its ``SiteName`` and runs a user's job. Nothing of the test
is left afterwards: no container, no network.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from rjq_facility import images

from .helpers import podman

pytestmark = pytest.mark.timeout(900)

LABEL = "org.remote-jobqueue.test"


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    return images.ensure_images()


def test_every_image_builds_and_a_second_build_is_a_lookup(built):
    assert set(built) == set(images.IMAGES)
    started = time.monotonic()
    assert images.ensure_images() == built
    assert time.monotonic() - started < 10


def test_the_images_hold_htcondor_23_and_xrootd_5(built):
    assert "$CondorVersion: 23." in podman("run", "--rm", built["condor"], "condor_version")
    version = podman("run", "--rm", built["xrootd"], "sh", "-c", "xrootd -v 2>&1").strip()
    assert version.startswith("v5."), version  # xrootd says it on stderr


@pytest.fixture
def pool_files(tmp_path: Path) -> Path:
    """What the facility mounts into every node: shared settings and the pool's password."""
    (tmp_path / "passwords.d").mkdir(mode=0o700)
    password = base64.b64encode(secrets.token_bytes(32)).decode()
    pool = tmp_path / "passwords.d" / "POOL"
    pool.write_text(password)
    pool.chmod(0o600)
    (tmp_path / "90-facility.conf").write_text(
        "SEC_DEFAULT_AUTHENTICATION_METHODS = FS, PASSWORD\n"
        "ALLOW_DAEMON = condor_pool@*\n"
        "ALLOW_WRITE = *\n"
        "NEGOTIATOR_INTERVAL = 2\nSCHEDD_INTERVAL = 2\nUPDATE_INTERVAL = 2\n"
    )
    return tmp_path


def _wait(what: str, check, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(1)


def _hostname_job(cm: str, site: str) -> str:
    """Submit ``hostname`` as alice on the central manager ``cm`` to ``site``; its output."""
    submit = (
        "executable = /bin/hostname\ntransfer_executable = false\noutput = out.txt\n"
        f'should_transfer_files = YES\nrequirements = SiteName == "{site}"\nqueue\n'
    )
    podman(
        "exec", cm, "su", "alice", "-s", "/bin/sh", "-c",
        f"cd ~ && printf '{submit}' > job.sub && condor_submit job.sub",
    )  # fmt: skip
    return _wait(
        f"alice's job runs at {site} and its output comes back",
        lambda: podman("exec", cm, "cat", "/home/alice/out.txt", check=False).strip(),
    )


def test_the_condor_image_makes_a_pool_that_runs_a_job_at_the_named_site(built, pool_files):
    run_id = uuid.uuid4().hex[:8]
    network = f"rjq-test-{run_id}"
    mounts = [
        "-v", f"{pool_files / '90-facility.conf'}:/etc/condor/config.d/90-facility.conf:ro",
        "-v", f"{pool_files / 'passwords.d'}:/etc/condor/passwords.d:ro",
    ]  # fmt: skip
    podman("network", "create", "--subnet", "10.213.95.0/24", "--label", LABEL, network)
    try:
        for name, ip, env in [
            ("cm", "10.213.95.10", ["-e", "RJQ_ROLE=central-manager"]),
            ("t2-x", "10.213.95.11", ["-e", "RJQ_ROLE=execute", "-e", "RJQ_SITE=T2_X"]),
        ]:
            podman(
                "run", "-d", "--name", f"{network}-{name}", "--label", LABEL,
                "--network", network, "--ip", ip,
                "-e", "RJQ_CONDOR_HOST=10.213.95.10", *env, *mounts, built["condor"],
            )  # fmt: skip
        cm = f"{network}-cm"
        slots = _wait(
            "the execute node joins",
            lambda: podman("exec", cm, "condor_status", "-af", "SiteName", check=False).strip(),
        )
        assert slots == "T2_X"
        out = _hostname_job(cm, "T2_X")
        execute_host = podman("exec", f"{network}-t2-x", "hostname").strip()
        assert out == execute_host
    finally:
        ids = podman("ps", "-aq", "--filter", f"label={LABEL}").split()
        if ids:
            podman("rm", "-f", *ids, timeout=60)
        podman("network", "rm", network, check=False)
    assert podman("ps", "-aq", "--filter", f"label={LABEL}").split() == []
    networks = podman("network", "ls", "--format", "{{.Name}}").split()
    assert not [n for n in networks if n.startswith("rjq-test-")]


COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def compose(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    import shutil
    import sys

    tool = shutil.which("podman-compose", path=str(Path(sys.executable).parent))
    done = subprocess.run(
        [tool or "podman-compose", "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_the_compose_file_runs_the_pool_with_its_sites_behind_nat(built, pool_files, tmp_path):
    """What `docker compose up` gives anyone: three sites join, T2_A's and T2_B's only behind
    their NAT router (an internal network, CCB for the schedd's connections), and a job of
    alice runs at T2_A; the hub side has no way into a site; `down` leaves nothing."""
    for name in ("xrootd", "data"):
        (tmp_path / name).mkdir()
    (tmp_path / "xrootd" / "origin.cfg").write_text("")
    (tmp_path / "xrootd" / "cache.cfg").write_text("")
    env = {
        "RJQ_POOL_CONFIG": str(pool_files),
        "RJQ_XROOTD_CONFIG": str(tmp_path / "xrootd"),
        "RJQ_DATASET": str(tmp_path / "data"),
        "RJQ_CONDOR_IMAGE": built["condor"],
        "RJQ_XROOTD_IMAGE": built["xrootd"],
        "RJQ_NAT_IMAGE": built["nat"],
    }
    cm = "rjq-facility_central-manager_1"
    compose(env, "up", "-d")
    try:
        sites = _wait(
            "all three sites join",
            lambda: (
                sorted(podman("exec", cm, "condor_status", "-af", "SiteName").split())
                == ["T2_A", "T2_B", "T2_LOCAL"]
            ),
        )
        assert sites
        t2a = podman("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                     "rjq-facility_t2-a_1").strip()  # fmt: skip
        assert t2a.startswith("10.213.81.")
        assert "default via 10.213.81.254" in podman("exec", "rjq-facility_t2-a_1", "ip", "route")
        # The hub side has no way in: the connection fails at once, no packet leaves.
        probe = podman(
            "exec", cm, "python3", "-c",
            f"import socket\ntry:\n socket.create_connection(('{t2a}', 9618), 5)\n"
            " print('CONNECTED')\nexcept OSError as e:\n print('REFUSED', e.errno)",
            check=False,
        )  # fmt: skip
        assert "REFUSED 113" in probe or "REFUSED 101" in probe, probe  # no route to host
        out = _hostname_job(cm, "T2_A")  # behind its NAT
        assert out == podman("exec", "rjq-facility_t2-a_1", "hostname").strip()
    finally:
        compose(env, "down")
    names = podman("ps", "-a", "--format", "{{.Names}}").split()
    assert not [n for n in names if n.startswith("rjq-facility_")]
    networks = podman("network", "ls", "--format", "{{.Name}}").split()
    assert not [n for n in networks if n.startswith("rjq-facility_")]
