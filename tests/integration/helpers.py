"""Small helpers the integration tests share: run code as a facility user, submit test jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rjq_facility import lifecycle
from rjq_facility.config import FacilityConfig


def user_env(cfg: FacilityConfig, user: str) -> dict[str, str]:
    return {**os.environ, **lifecycle.env(cfg, user)}


def run_as(
    cfg: FacilityConfig, user: str, code: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a fresh process with ``user``'s client settings.

    A fresh process per user matters: the bindings cache security sessions per process, so
    "bob" in the same process as "alice" could ride on alice's authenticated session.
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=user_env(cfg, user),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python_job(code: str, workdir: Path, **extra: str) -> dict[str, str]:
    """A submit description running ``code`` with this project's own Python at a site.

    The code travels as an input file (spooled with the job), the interpreter is the one the
    pool's nodes mount from the host (the software area).
    """
    (workdir / "job.py").write_text(textwrap.dedent(code).strip() + "\n")
    return {
        "executable": sys.executable,
        "transfer_executable": "false",
        "arguments": "job.py",
        "transfer_input_files": "job.py",
        "initialdir": str(workdir),
        "output": "out.txt",
        "error": "err.txt",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "request_cpus": "1",
        "request_memory": "256",
        "job_machine_attrs": "SiteName",
        **extra,
    }


async def gateway_refusal(cfg: FacilityConfig, token: str, cluster_id: str, port: int = 8786):
    """What the facility's gateway answers (an `asyncssh.ChannelOpenError`) when this token's
    owner asks for ``cluster_id``'s ``port`` (the scheduler's by default); fails the test if
    the channel opens."""
    import asyncssh
    import pytest

    from remote_jobqueue.gateway.hostkeys import load_host_keys
    from remote_jobqueue.gateway.tunnel import connect_gateway
    from rjq_facility import gateway_service

    keys = load_host_keys(gateway_service.public_host_key(cfg))
    conn = await connect_gateway(cfg.gateway, keys, token)
    try:
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection(cluster_id, port)
        return refused.value
    finally:
        conn.close()


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    """``podman ARGS``'s output; a failure is the test's, with podman's own message."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def panel_server(cfg: FacilityConfig, user: str, home: Path, **factory_kwargs):
    """A real JupyterLab server of ``user`` (see `tests.lab_server`): their site catalogue, and
    the Dask panel's NEW making a `RemoteHTCondorCluster` with ``factory_kwargs``."""
    from tests.lab_server import LabServer

    factory = {
        "module": "remote_jobqueue",
        "class": "RemoteHTCondorCluster",
        "args": [],
        "kwargs": {"quiet": True, **factory_kwargs},
    }
    dask_config = {**lifecycle.client_dask_config(cfg, user), "labextension": {"factory": factory}}
    return LabServer(home, dask_config)


def cli(cfg: FacilityConfig, user: str, *args: str, timeout: float = 120):
    """``remote-jobqueue ARGS`` in a fresh process with ``user``'s client settings."""
    command = Path(sys.executable).with_name("remote-jobqueue")
    return subprocess.run(
        [str(command), *args],
        env={**user_env(cfg, user), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def jobs_of(cfg: FacilityConfig, cluster_id: str, attrs=("RjqRole",)) -> list:
    """The ads of every job in the queue tagged with ``cluster_id`` (``attrs`` projected)."""
    from remote_jobqueue import schedd as sched

    schedd = sched.locate(cfg.collector, cfg.schedd_name)
    return sched.job_ads(schedd, f'RjqClusterId == "{cluster_id}"', list(attrs))


class IssuerLog:
    """What the facility's issuer logs from now on (grants, revocations: never a token)."""

    def __init__(self, cfg: FacilityConfig) -> None:
        from rjq_facility import issuer

        self.path = cfg.logs / f"{issuer.NAME}.log"
        self.seen = len(self.path.read_text().splitlines())

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines()[self.seen :]

    def first_of(self, *texts: str) -> list[int]:
        """For each text, the first new line that has it; AssertionError if one has none."""
        lines = self.lines()
        found = []
        for text in texts:
            at = [n for n, line in enumerate(lines) if text in line]
            assert at, f"the issuer's log has no {text!r} since:\n" + "\n".join(lines)
            found.append(at[0])
        return found
