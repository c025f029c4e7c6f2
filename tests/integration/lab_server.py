"""A real `jupyter server` with dask-labextension (and this project's lab extension), as the
users' JupyterLab runs it, for tests that drive the Dask panel's REST API or a browser."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass
class LabServer:
    url: str
    token: str
    log: Path

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(
            method,
            f"{self.url}{path}",
            headers=headers,
            timeout=kwargs.pop("timeout", 180),
            **kwargs,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab_server(
    env: dict[str, str], root: Path, factory_kwargs: dict[str, str]
) -> Iterator[LabServer]:
    """``jupyter lab`` on a free loopback port, its Dask panel's factory a
    `RemoteHTCondorCluster` with ``factory_kwargs``. The token travels in the environment,
    never on the command line."""
    port, token = _free_port(), secrets.token_hex(24)
    factory = {
        "DASK_LABEXTENSION__FACTORY__MODULE": "remote_jobqueue",
        "DASK_LABEXTENSION__FACTORY__CLASS": "RemoteHTCondorCluster",
        **{
            f"DASK_LABEXTENSION__FACTORY__KWARGS__{k.upper()}": v for k, v in factory_kwargs.items()
        },
    }
    log = root / "jupyter.log"
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--ServerApp.open_browser=False",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env, **factory, "JUPYTER_TOKEN": token},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if server.request("GET", "/api/status", timeout=5).ok:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
