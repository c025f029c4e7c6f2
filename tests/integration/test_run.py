"""`remote-jobqueue run`: an analysis that goes on when the terminal that started it closes.

Specification:
- `run` of the dimuon example at `T2_A` prints its cluster's id; killing the command leaves the
  run going; `clusters logs ID --follow` from a new process shows its output to the end and
  exits with the script's status; `clusters fetch` brings back the PNG it wrote; the cluster
  ends by itself after its linger time, leaving no job;
- a script that fails shows its traceback through `clusters logs` and a non-zero status.

A run outliving the token it started with (no client attached, the bundle renewing it with
the run's own refresh token) is `test_spawner.py`'s run from a JupyterLab terminal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..waiting import wait_until
from .helpers import cli, jobs_of, user_env

pytestmark = pytest.mark.timeout(420)

EXAMPLES = Path(__file__).parents[2] / "examples"


def _start_run(facility, *args: str) -> tuple[subprocess.Popen, str]:
    command = str(Path(sys.executable).with_name("remote-jobqueue"))
    proc = subprocess.Popen(
        [command, "run", *args],
        env={**user_env(facility, "alice"), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    assert first.startswith("rjq-"), (first, proc.stderr.read() if proc.poll() else "")
    return proc, first.split(":")[0]


def test_a_run_goes_on_when_its_command_is_killed_and_its_png_comes_back(facility, alice, tmp_path):
    script = EXAMPLES / "dimuon_uproot.py"
    proc, cluster_id = _start_run(
        facility, "--site", "T2_A", "--workers", "2", "--linger", "20", str(script), "--files", "4"
    )
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert jobs_of(facility, cluster_id), "the run goes on without its command"

        logs = cli(facility, "alice", "clusters", "logs", cluster_id, "--follow", timeout=300)
        assert logs.returncode == 0, logs.stderr
        assert "4 file(s)" in logs.stdout and "the run's cluster, 2 worker(s)" in logs.stdout
        assert "histogram saved to dimuon_uproot.png" in logs.stdout
        assert "the script exited with status 0" in logs.stderr

        fetched = cli(facility, "alice", "clusters", "fetch", cluster_id, "dimuon_uproot.png",
                      "--to", str(tmp_path))  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert (tmp_path / "dimuon_uproot.png").read_bytes()[:4] == b"\x89PNG"
        refused = cli(facility, "alice", "clusters", "fetch", cluster_id, "../bundle.json")
        assert refused.returncode == 1 and "not in the run's directory" in refused.stderr
    finally:
        proc.kill()
    wait_until(lambda: not jobs_of(facility, cluster_id), 90, "the cluster ends after the run")


def test_a_failing_script_shows_its_traceback_and_status(facility, alice, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text('print("starting")\nraise RuntimeError("boom at the site")\n')
    proc, cluster_id = _start_run(facility, "--site", "T2_LOCAL", "--linger", "30", str(script))
    try:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 1, err
        assert "RuntimeError: boom at the site" in out

        logs = cli(facility, "alice", "clusters", "logs", cluster_id, "--follow")
        assert logs.returncode == 1
        assert "Traceback (most recent call last)" in logs.stdout
        assert "RuntimeError: boom at the site" in logs.stdout
        assert "the script exited with status 1" in logs.stderr
    finally:
        proc.kill()
    wait_until(lambda: not jobs_of(facility, cluster_id), 90, "the cluster ends after the run")
