"""`remote-jobqueue login` on a machine outside the hub, and a cluster on that login alone.

Specification (users of a laptop, a network namespace of its own that reaches the facility
only through its published addresses, each a Unix user of their own with nothing of the
facility's but what `remote-jobqueue configure` took from its public settings):
- `login` prints a verification URL and a user code, and once the user approves the code at
  that URL (the test plays the browser), stores the token where WLCG discovery finds it (0600,
  the user's) and its refresh token privately;
- `whoami` says who the token, the gateway and the schedd take the user for;
- a cluster at `T2_A` computes on that token: the gateway, the schedd and the bundle all take it;
- a second user of the same machine neither finds nor can read the first's token, and their own
  login makes them themselves to the gateway and the schedd;
- `logout` leaves no token file, and the refresh token no longer works.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

import remote_jobqueue
import rjq_facility
from rjq_facility import issuer, lifecycle

from .hub import ensure_host_user, grant_traverse

pytestmark = pytest.mark.timeout(420)

CLI = str(Path(sys.executable).with_name("remote-jobqueue"))


@dataclass
class Laptop:
    """A shell of ``user`` on the outside machine: their own uid, home and runtime directory."""

    facility: object
    user: str
    home: Path

    @property
    def runtime(self) -> Path:
        return self.home / "run"

    @property
    def token_file(self) -> Path:
        return self.runtime / f"bt_u{pwd.getpwnam(self.user).pw_uid}"

    @property
    def refresh_file(self) -> Path:
        return self.home / ".config" / "remote-jobqueue" / "refresh-token"

    def argv(self, *argv: str) -> list[str]:
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        inside = ["ip", "netns", "exec", self.facility.outside_netns]
        as_user = ["runuser", "-u", self.user, "--", "env", "-i"]
        return [*inside, *as_user, *(f"{k}={v}" for k, v in env.items()), *argv]

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*argv), capture_output=True, text=True, timeout=timeout, cwd=self.home
        )

    def python(self, code: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-c", textwrap.dedent(code), timeout=timeout)

    def login(self) -> subprocess.CompletedProcess:
        """`remote-jobqueue login`, the user approving in a browser as soon as it asks."""
        proc = subprocess.Popen(
            self.argv(CLI, "login"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.home,
        )
        seen = []
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            text = "".join(seen)
            url = re.search(r"(https?://\S+/device)\b", text)
            code = re.search(r"enter the code ([A-Z0-9]{4}-[A-Z0-9]{4})\b", text)
            if url and code:
                _approve(self.facility, self.user, url.group(1), code.group(1))
                break
        out, _ = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, "")


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


@pytest.fixture
def laptops(facility) -> Iterator[dict[str, Laptop]]:
    """alice's and bob's shells on the outside machine, each configured from the facility's
    published settings only."""
    restore: list[tuple[Path, int]] = []
    for code in (Path(os.path.realpath(sys.executable)), Path(sys.prefix) / "bin"):
        restore += grant_traverse(code)
    for package in (remote_jobqueue, rjq_facility):
        restore += grant_traverse(Path(package.__file__))
    shells = {}
    for user in ("alice", "bob"):
        account = ensure_host_user(user)
        home = Path(tempfile.mkdtemp(prefix=f"rjq-laptop-{user}-"))
        (home / "run").mkdir(mode=0o700)
        published = home / "facility.yaml"
        published.write_text(yaml.safe_dump(lifecycle.public_client_settings(facility)))
        for path in (home, home / "run", published):
            os.chown(path, account.pw_uid, account.pw_gid)
        shells[user] = laptop = Laptop(facility, user, home)
        configured = laptop.run(CLI, "configure", str(published))
        assert configured.returncode == 0, configured.stderr
    yield shells
    for laptop in shells.values():
        laptop.run(CLI, "logout")
        shutil.rmtree(laptop.home, ignore_errors=True)
    for path, mode in reversed(restore):
        path.chmod(mode)


def test_the_outside_machine_is_not_the_hub(facility, laptops):
    """The laptop has an address of its own and no route but the host's link."""
    shown = laptops["alice"].run("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f" {facility.outside_address}/24 " in shown
    assert facility.hub_address not in shown


def test_a_device_login_from_outside_carries_a_cluster_at_t2_a(facility, laptops):
    alice, bob = laptops["alice"], laptops["bob"]
    logged_in = alice.login()
    assert logged_in.returncode == 0, logged_in.stdout
    token = alice.token_file.stat()
    assert stat.S_IMODE(token.st_mode) == 0o600
    assert token.st_uid == pwd.getpwnam("alice").pw_uid
    assert stat.S_IMODE(alice.refresh_file.stat().st_mode) == 0o600
    assert alice.token_file.read_text().strip() not in logged_in.stdout, "never shown"

    who = alice.run(CLI, "whoami")
    assert who.returncode == 0, who.stderr
    lines = who.stdout.splitlines()
    assert lines[0].startswith("token (claims not verified): preferred_username=alice ")
    assert lines[1].startswith(f"gateway {facility.gateway}: alice (sub=")
    assert lines[2] == f"schedd {facility.schedd_name}: alice@{facility.uid_domain}"

    computed = alice.python(
        """
        from dask.distributed import Client
        from remote_jobqueue import RemoteHTCondorCluster
        with RemoteHTCondorCluster(site="T2_A", n_workers=1, quiet=True) as cluster:
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=120)
                print("sum", client.submit(sum, [1, 2, 3]).result())
        """
    )
    assert "sum 6" in computed.stdout, computed.stderr[-3000:]

    # bob, on the same machine: finds no token, cannot read alice's, and logs in as himself.
    nothing = bob.run(CLI, "whoami")
    assert nothing.returncode == 1
    assert nothing.stdout.startswith("token: none found (WLCG discovery)")
    assert "alice" not in nothing.stdout + nothing.stderr
    peek = bob.python(f"print(open({str(alice.token_file)!r}).read())", timeout=60)
    assert "PermissionError: [Errno 13] Permission denied" in peek.stderr
    assert bob.login().returncode == 0
    bob_says = bob.run(CLI, "whoami").stdout.splitlines()
    assert bob_says[1].startswith(f"gateway {facility.gateway}: bob (sub=")
    assert bob_says[2] == f"schedd {facility.schedd_name}: bob@{facility.uid_domain}"
    assert alice.run(CLI, "whoami").stdout.splitlines()[2].endswith(": alice@rjq.test")

    refresh_token = alice.refresh_file.read_text().strip()
    out = alice.run(CLI, "logout")
    assert out.returncode == 0, out.stderr
    assert not alice.token_file.exists() and not alice.refresh_file.exists()
    assert bob.token_file.exists(), "alice's logout is hers only"
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
