"""The facility's SSH gateway: `remote-jobqueue gateway` on the hub side, trusting the issuer.

Its host key is made before it starts, so the site catalogue can pin it from the first `up`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from remote_jobqueue.tokens import WLCG_ANY_AUDIENCE

from . import processes
from .config import FacilityConfig

NAME = "gateway"
#: The audience a token for the gateway may carry (besides the WLCG "any" audience).
GATEWAY_AUDIENCE = "remote-jobqueue-gateway"


def host_key_path(cfg: FacilityConfig) -> Path:
    return cfg.state_dir / "gateway" / "host_key"


def public_host_key(cfg: FacilityConfig) -> str:
    from remote_jobqueue.gateway.hostkeys import load_or_create_host_key, public_key_text

    path = host_key_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    return public_key_text(load_or_create_host_key(path))


def up(cfg: FacilityConfig, timeout: float = 30) -> None:
    public_host_key(cfg)
    if processes.pid_of(NAME, cfg.run) is None:
        argv = [
            sys.executable,
            "-m",
            "remote_jobqueue.gateway",
            "--listen",
            cfg.gateway,
            "--host-key",
            str(host_key_path(cfg)),
            "--issuer",
            cfg.issuer_url,
            "--audience",
            GATEWAY_AUDIENCE,
            "--audience",
            WLCG_ANY_AUDIENCE,
        ]
        processes.start_daemon(NAME, argv, cfg.run, cfg.logs)
    processes.wait_for_port(cfg.hub_address, cfg.gateway_port, timeout=timeout)


def down(cfg: FacilityConfig) -> None:
    processes.stop_daemon(NAME, cfg.run)


def status(cfg: FacilityConfig) -> dict:
    pid = processes.pid_of(NAME, cfg.run)
    return {"running": pid is not None, "pid": pid, "address": cfg.gateway}
