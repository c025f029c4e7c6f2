"""A real `jupyter server`, as the users' JupyterLab runs it: a subprocess on a free loopback
port with a token (in its environment, never on its command line), JupyterLab,
dask-labextension's and remote_jobqueue.lab's server extensions on, and a Dask config of its
own (what the test gives it: a site catalogue, the Dask panel's factory), isolated from the
caller's Jupyter and Dask settings. Unit tests give it fake sites; integration tests a facility
user's catalogue, and a browser."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

EXTENSIONS = {"jupyterlab": True, "dask_labextension": True, "remote_jobqueue.lab": True}
#: Settings the caller's environment must not slip into the server's Dask config.
DASK_PREFIXES = ("DASK_REMOTE_JOBQUEUE__", "DASK_LABEXTENSION__")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter server`` with ``dask_config`` (a Dask config mapping) in ``home``."""

    def __init__(self, home: Path, dask_config: dict[str, Any], timeout: float = 60) -> None:
        self.home = home
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_dir, dask_dir = home / "jupyter-config", home / "dask"
        for path in (config_dir, dask_dir, home / "data", home / "runtime", home / "root"):
            path.mkdir(parents=True, exist_ok=True)
        server_config = {"ServerApp": {"jpserver_extensions": EXTENSIONS}}
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(server_config))
        (dask_dir / "test.yaml").write_text(yaml.safe_dump(dask_config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(DASK_PREFIXES)}
        env.update(
            JUPYTER_CONFIG_DIR=str(config_dir),
            JUPYTER_DATA_DIR=str(home / "data"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            DASK_CONFIG=str(dask_dir),
            JUPYTER_TOKEN=self.token,
        )
        self.log = home / "server.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_server",
                    "--no-browser",
                    "--allow-root",
                    "--ServerApp.ip=127.0.0.1",
                    f"--ServerApp.port={self.port}",
                    "--ServerApp.port_retries=0",
                    f"--ServerApp.root_dir={home / 'root'}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{self.log_tail()}")
            try:
                if self.get("/api/status").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"jupyter server not up within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def request(self, method: str, path: str, token: str | None = None, **kwargs: Any):
        headers = {"Authorization": f"token {self.token if token is None else token}"}
        return requests.request(method, self.url + path, headers=headers, timeout=120, **kwargs)

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.request("PUT", path, data=data, **kwargs)

    def descendants(self) -> list[psutil.Process]:
        """The server's processes (a local cluster's bundle and workers among them)."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def __enter__(self) -> LabServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
