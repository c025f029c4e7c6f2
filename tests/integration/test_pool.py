"""The development pool is a real HTCondor pool with sites behind NAT.

Specification:
- a job submitted by alice with the bindings runs at the site its requirements name, and its
  output comes back to the client;
- bob cannot remove alice's job;
- a remote site accepts no connection from the hub side, but reaches the hub side itself.
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import time

import pytest

from remote_jobqueue import schedd as sched
from rjq_facility import condor
from rjq_facility.config import FacilityConfig

from .helpers import python_job, run_as

SCHEDD = "hub@rjq.test"


@pytest.fixture
def alice(facility: FacilityConfig):
    with condor._client_env(facility, "alice"):
        yield sched.locate(facility.collector, SCHEDD)


@pytest.mark.parametrize("site", ["T2_LOCAL", "T2_A", "T2_B"])
def test_job_runs_at_the_named_site_and_its_output_comes_back(facility, alice, site, tmp_path):
    expected_address = facility.site(site).address
    code = f"""
        import json, os, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("{facility.hub_address}", 9))
        print(json.dumps({{"site": os.environ["RJQ_SITE"], "address": s.getsockname()[0],
                          "user": os.getuid()}}))
    """
    desc = python_job(
        code,
        tmp_path,
        requirements=f'TARGET.SiteName == "{site}"',
        environment='"RJQ_SITE=$$(SiteName)"',
    )
    cluster = sched.submit(alice, desc)
    sched.wait_for_status(alice, cluster, {sched.JobStatus.COMPLETED}, timeout=120)
    alice.retrieve(f"ClusterId == {cluster}")
    out = json.loads((tmp_path / "out.txt").read_text())
    assert out["site"] == site
    assert out["address"] == expected_address
    assert out["user"] != 0, "HTCondor must never run jobs as root"
    sched.remove(alice, f"ClusterId == {cluster}")


def test_bob_cannot_remove_alices_job(facility, alice, tmp_path):
    # It never matches, so it stays idle in the queue for as long as the test needs it.
    desc = python_job("pass", tmp_path, requirements='TARGET.SiteName == "T2_NOWHERE"')
    cluster = sched.submit(alice, desc)
    try:
        attempt = run_as(
            facility,
            "bob",
            f"""
            import json
            import htcondor2
            from remote_jobqueue import schedd as sched
            s = sched.locate("{facility.collector}", "{SCHEDD}")
            try:
                result = s.act(htcondor2.JobAction.Remove, "ClusterId == {cluster}")
            except htcondor2.HTCondorException as err:
                print("REFUSED", type(err).__name__, err)
            else:
                totals = ("TotalSuccess", "TotalPermissionDenied", "TotalNotFound", "TotalError")
                print("RESULT", json.dumps({{k: int(result[k]) for k in totals}}))
            """,
        )
        assert attempt.returncode == 0, attempt.stderr
        # The schedd refused bob: the bindings raised their own error, or the action's totals
        # say that no job was removed (anything else, e.g. a bug in the code above, fails).
        (outcome,) = [
            line for line in attempt.stdout.splitlines() if line.startswith(("REFUSED", "RESULT"))
        ]
        if outcome.startswith("RESULT"):
            assert json.loads(outcome.removeprefix("RESULT "))["TotalSuccess"] == 0, outcome
        else:
            assert outcome.startswith("REFUSED HTCondorException"), outcome
        ads = sched.job_ads(alice, f"ClusterId == {cluster}")
        assert ads and ads[0]["JobStatus"] != sched.JobStatus.REMOVED, attempt.stdout
        owner = alice.query(f"ClusterId == {cluster}", projection=["Owner"])[0]["Owner"]
        assert owner == "alice"
    finally:
        sched.remove(alice, f"ClusterId == {cluster}")


def _listen_in_site(netns: str, address: str, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            address,
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Wait until it listens, checked from inside the site itself.
    for _ in range(100):
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                "-c",
                f"import socket; socket.create_connection(('{address}', {port}), timeout=1)",
            ],
            capture_output=True,
        )
        if probe.returncode == 0:
            return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("test server in the site did not start")


def test_a_remote_site_accepts_no_connection_from_the_hub_side(facility):
    site = facility.site("T2_A")
    server = _listen_in_site(site.netns, site.address, 18080)
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as refused:
            socket.create_connection((site.address, 18080), timeout=3).close()
        # No route at all (the host's unreachable route), at once: not a timeout.
        assert refused.value.errno == errno.EHOSTUNREACH, refused.value
        assert time.monotonic() - started < 2
    finally:
        server.kill()
        server.wait()


def test_a_remote_site_reaches_the_hub_side(facility):
    site = facility.site("T2_A")
    listener = socket.create_server((facility.hub_address, 0))
    port = listener.getsockname()[1]
    try:
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                site.netns,
                sys.executable,
                "-c",
                "import socket; socket.create_connection("
                f"('{facility.hub_address}', {port}), timeout=3)",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stderr
    finally:
        listener.close()


def test_every_site_advertises_its_name(facility):
    with condor._client_env(facility, "alice"):
        import htcondor2

        ads = htcondor2.Collector(facility.collector).query(
            htcondor2.AdTypes.Startd, projection=["SiteName"]
        )
    assert {ad["SiteName"] for ad in ads} >= {s.name for s in facility.sites}


def test_users_authenticate_with_their_own_private_idtoken(facility):
    for user in facility.users:
        text = (facility.user_dir(user) / "condor_config").read_text()
        assert "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS" in text
        token = facility.user_dir(user) / "tokens.d" / "token"
        assert token.stat().st_mode & 0o777 == 0o600
        assert facility.user_dir(user).stat().st_mode & 0o077 == 0


def test_the_host_forwards_nothing_of_the_hub_network_off_the_machine(facility):
    from rjq_facility import network

    table = subprocess.run(
        ["nft", "list", "table", "ip", network.EGRESS_TABLE], capture_output=True, text=True
    )
    assert table.returncode == 0, table.stderr
    assert f"ip saddr {facility.hub_subnet}" in table.stdout and "drop" in table.stdout
