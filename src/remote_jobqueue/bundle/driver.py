"""A detached run's driver: the user's script, next to the scheduler at the site.

`remote-jobqueue run` ships the script with the scheduler job; the bundle starts it in a
directory of its own (``run/``), as a Dask client of this cluster (the scheduler's address and
the cluster's TLS pair in its Dask config, through the environment), so the analysis goes on
when the user's terminal closes. Its stdout and stderr go to ``run/driver.log``, which
`clusters logs` reads; its output files stay in ``run/`` for `clusters fetch`. When it ends
(or runs past its wall time), the cluster lingers a while for those, then ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ..spec import TLS_CERT, TLS_KEY

logger = logging.getLogger("remote_jobqueue.bundle")

RUN_DIR = "run"
LOG_NAME = "driver.log"
#: The most `clusters fetch` hands back in one file.
MAX_FETCH = 256 * 2**20


class Driver:
    def __init__(self, scratch: Path, python: str, spec: dict[str, Any]) -> None:
        self.scratch, self.python = scratch, python
        self.script = str(spec["script"])
        self.args = [str(a) for a in spec.get("args", ())]
        self.wall_time = float(spec.get("wall_time") or 0) or None
        self.linger = float(spec.get("linger", 300))
        self.dir = scratch / RUN_DIR
        self.log = self.dir / LOG_NAME
        self.proc: asyncio.subprocess.Process | None = None
        self.returncode: int | None = None
        self.ended_at: float | None = None
        self.why = ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.returncode is None

    async def start(self, scheduler_address: str) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(self.scratch / self.script, self.dir / self.script)
        env = _client_environment(os.environ, scheduler_address, self.scratch)
        log = self.log.open("ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.python,
                "-u",
                self.script,
                *self.args,
                cwd=self.dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        logger.info("driver %s started (pid %d)", self.script, self.proc.pid)

    async def wait(self) -> int:
        """Until the script ends, or its wall time runs out (then it is killed)."""
        assert self.proc is not None
        try:
            self.returncode = await asyncio.wait_for(self.proc.wait(), self.wall_time)
            self.why = f"the script exited with status {self.returncode}"
        except TimeoutError:
            self._kill()
            self.returncode = await self.proc.wait()
            self.why = f"the script ran past its wall time ({self.wall_time:.0f} s)"
        self.ended_at = time.monotonic()
        logger.info("driver done: %s", self.why)
        return self.returncode

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        self._kill()
        if self.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)

    def status(self) -> dict[str, Any]:
        return {
            "state": "running" if self.running or self.proc is None else "done",
            "returncode": self.returncode,
            "why": self.why,
        }

    def read_log(self, offset: int = 0, limit: int = 2**20) -> dict[str, Any]:
        try:
            with self.log.open("rb") as f:
                f.seek(max(0, int(offset)))
                data = f.read(limit)
        except FileNotFoundError:
            data = b""
        return {"text": data.decode(errors="replace"), "offset": int(offset) + len(data)}

    def read_file(self, relative: str) -> bytes:
        """A file of the run's directory (never outside it, never a link out of it)."""
        path = (self.dir / relative).resolve()
        if self.dir.resolve() not in path.parents:
            raise PermissionError(f"{relative} is not in the run's directory")
        if not path.is_file():
            raise FileNotFoundError(f"the run has no file {relative}")
        if path.stat().st_size > MAX_FETCH:
            raise ValueError(f"{relative} is larger than {MAX_FETCH // 2**20} MiB")
        return path.read_bytes()


def _client_environment(environ: Any, address: str, scratch: Path) -> dict[str, str]:
    """The script's environment: a Dask client of this cluster, with its TLS pair."""
    from ..environ import for_cluster_processes

    cert, key = str(scratch / TLS_CERT), str(scratch / TLS_KEY)
    return {
        **for_cluster_processes(environ),
        "DASK_SCHEDULER_ADDRESS": address,
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": cert,
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": cert,
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": key,
    }
