"""What the benchmarks share: a facility user's client environment and HTCondor's commands.

`dask_jobqueue.HTCondorCluster`, the alternative users would pick, drives HTCondor through
`condor_submit` / `condor_q` / `condor_rm`. The client machine has only the Python bindings, so
thin wrappers run the pool's own commands in its container, as the same user token.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from rjq_facility import condor, lifecycle
from rjq_facility.config import FacilityConfig

CONDOR_COMMANDS = ("condor_submit", "condor_q", "condor_rm", "condor_status")


def use_facility(user: str = "alice") -> FacilityConfig:
    """Bring the facility up (idempotent) and make this process a client of ``user``."""
    cfg = FacilityConfig()
    lifecycle.up(cfg, log=lambda *_: None)
    os.environ.update(lifecycle.env(cfg, user))
    import dask.config

    # The user's site catalogue lives in DASK_CONFIG, which Dask read when it was imported.
    dask.config.paths.append(os.environ["DASK_CONFIG"])
    dask.config.refresh()
    import htcondor2

    htcondor2.reload_config()  # the bindings, too, read CONDOR_CONFIG when first imported
    return cfg


def install_condor_commands(cfg: FacilityConfig) -> Path:
    """Put wrappers for HTCondor's commands on PATH; return the directory they live in.

    The pool's container sees the facility's state directory at the same path, so temporary
    submit files go there (``TMPDIR``), where the commands inside can read them; they run with
    the caller's client configuration (``CONDOR_CONFIG``: the user's token).
    """
    bench = cfg.state_dir / "bench"
    bindir, tmp = bench / "bin", bench / "tmp"
    bindir.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    hub = condor.container_name(next(s for s in cfg.sites if not s.private))
    for command in CONDOR_COMMANDS:
        wrapper = bindir / command
        wrapper.write_text(
            "#!/bin/sh\n"
            f'exec podman exec -i --env CONDOR_CONFIG="$CONDOR_CONFIG" --workdir {tmp} '
            f'{hub} /usr/bin/{command} "$@"\n'
        )
        wrapper.chmod(0o755)
    os.environ["PATH"] = f"{bindir}:{os.environ['PATH']}"
    os.environ["TMPDIR"] = str(tmp)
    import tempfile

    tempfile.tempdir = str(tmp)
    return bindir


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
