"""`remote-jobqueue login` against the facility's issuer, and a cluster on that login alone.

Specification (a user whose shell has only what `remote-jobqueue configure` took from the
facility's public settings, as a laptop would; no token written by the facility):
- `login` prints a verification URL and a user code, and once the user approves the code at
  that URL (the test plays the browser), stores the token where WLCG discovery finds it (0600)
  and its refresh token privately;
- `whoami` says who the token, the gateway and the schedd take the user for;
- a cluster at `T2_A` computes on that token: the gateway, the schedd and the bundle all take it;
- `logout` leaves no token file, and the refresh token no longer works;
- another user's shell on the same machine does not see the first user's token.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
import yaml

from rjq_facility import gateway_service, issuer, lifecycle, scitokens

pytestmark = pytest.mark.timeout(300)

CLI = str(Path(sys.executable).with_name("remote-jobqueue"))


def _laptop(facility, home: Path) -> dict[str, str]:
    """A shell with nothing of the facility's but what `remote-jobqueue configure` takes from
    its public settings file: no facility environment, no Dask or HTCondor variable."""
    home.mkdir(parents=True)
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    keep = ("PATH", "LANG", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), COLUMNS="200")
    published = home / "facility.yaml"
    published.write_text(yaml.safe_dump(lifecycle.public_client_settings(facility)))
    configured = subprocess.run(
        [CLI, "configure", str(published)], env=env, capture_output=True, text=True, timeout=60
    )
    assert configured.returncode == 0, configured.stderr
    return env


def _approve(facility, user: str, url: str, code: str) -> None:
    answer = requests.post(
        url,
        data={
            "user_code": code,
            "username": user,
            "password": issuer.user_password(facility, user),
            "action": "approve",
        },
        timeout=30,
    )
    assert answer.status_code == 200 and "Device approved" in answer.text, answer.text


def _login(facility, env: dict[str, str], user: str) -> subprocess.CompletedProcess:
    """`remote-jobqueue login`, with the user approving in a browser as soon as it asks."""
    audiences = ["--audience", gateway_service.GATEWAY_AUDIENCE]
    audiences += ["--audience", scitokens.POOL_AUDIENCE]
    proc = subprocess.Popen(
        [CLI, "login", *audiences],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        text = "".join(seen)
        url = re.search(r"(https?://\S+/device)\b", text)
        code = re.search(r"enter the code ([A-Z0-9]{4}-[A-Z0-9]{4})\b", text)
        if url and code:
            _approve(facility, user, url.group(1), code.group(1))
            break
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, "")


def test_a_device_login_carries_a_cluster_at_t2_a_and_logout_leaves_nothing(facility, tmp_path):
    env = _laptop(facility, tmp_path / "alice")
    logged_in = _login(facility, env, "alice")
    assert logged_in.returncode == 0, logged_in.stdout
    token_file = Path(env["XDG_RUNTIME_DIR"]) / f"bt_u{os.geteuid()}"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    refresh = Path(env["HOME"]) / ".config" / "remote-jobqueue" / "refresh-token"
    assert stat.S_IMODE(refresh.stat().st_mode) == 0o600
    assert token_file.read_text().strip() not in logged_in.stdout, "the token is never shown"

    who = subprocess.run([CLI, "whoami"], env=env, capture_output=True, text=True, timeout=60)
    assert who.returncode == 0, who.stderr
    assert "alice" in who.stdout

    computed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                from dask.distributed import Client
                from remote_jobqueue import RemoteHTCondorCluster
                with RemoteHTCondorCluster(site="T2_A", n_workers=1, quiet=True) as cluster:
                    with Client(cluster) as client:
                        client.wait_for_workers(1, timeout=120)
                        print("sum", client.submit(sum, [1, 2, 3]).result())
                """
            ),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "sum 6" in computed.stdout, computed.stderr[-3000:]

    # Another user's shell on this machine finds no token of alice's.
    bob_env = _laptop(facility, tmp_path / "bob")
    bob = subprocess.run([CLI, "whoami"], env=bob_env, capture_output=True, text=True, timeout=60)
    assert bob.returncode == 1 and "alice" not in bob.stdout + bob.stderr

    refresh_token = refresh.read_text().strip()
    out = subprocess.run([CLI, "logout"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not token_file.exists() and not refresh.exists()
    reused = requests.post(
        issuer.token_endpoint(facility),
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": "remote-jobqueue",
        },
        timeout=30,
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
