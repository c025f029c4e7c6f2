"""The environment of a user's single-user server: which files and services to use, no secrets.

Everything is plain environment, so it works for any spawner (a local process, a pod):
HTCondor reads ``_CONDOR_*`` with ``CONDOR_CONFIG=ONLY_ENV``, Dask reads
``DASK_REMOTE_JOBQUEUE__*`` (settings checked against `remote-jobqueue-schema.yaml`, values
written as Python literals, which Dask parses), the XRootD client reads ``XRD_*``/``XROOT_PROXY``,
and every WLCG tool finds the token through ``BEARER_TOKEN_FILE``. The token itself is never in
the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .. import config
from ..data import cache_environment
from ..environ import looks_secret, without_secrets

__all__ = ["ServerSettings", "looks_secret", "server_environment", "without_secrets"]


@dataclass(frozen=True)
class ServerSettings:
    """What one user's server needs, resolved from the spawner's configuration."""

    runtime_dir: str
    token_file_name: str = "bearer-token"
    #: The server's `remote-jobqueue` Dask settings (``{"sites": ..., "site": "random"}``): any
    #: keys of the schema; ``token-file`` is always the server's token file.
    dask: dict[str, Any] = field(default_factory=dict)
    collector: str | None = None
    condor_auth_methods: str = "SCITOKENS"
    condor_ca_file: str | None = None
    condor_settings: dict[str, str] = field(default_factory=dict)
    xrootd_cache: str | None = None
    xrootd_origin: str | None = None
    refresh_margin: float = 300.0

    @property
    def token_file(self) -> str:
        return str(PurePosixPath(self.runtime_dir) / self.token_file_name)

    @property
    def xrootd_plugin_dir(self) -> str:
        return str(PurePosixPath(self.runtime_dir) / "xrootd-plugins")


def condor_environment(s: ServerSettings) -> dict[str, str]:
    """HTCondor client settings: the collector, and SciTokens from the bearer-token file."""
    settings = {
        "SEC_CLIENT_AUTHENTICATION_METHODS": s.condor_auth_methods,
        "SCITOKENS_FILE": s.token_file,
        **({"COLLECTOR_HOST": s.collector} if s.collector else {}),
        **({"AUTH_SSL_CLIENT_CAFILE": s.condor_ca_file} if s.condor_ca_file else {}),
        **s.condor_settings,
    }
    return {"CONDOR_CONFIG": "ONLY_ENV", **{f"_CONDOR_{k}": str(v) for k, v in settings.items()}}


def _dask(key: str, value: object) -> tuple[str, str]:
    # repr() makes every value a literal that Dask's environment parser reads back unchanged
    # (a bare "1e5" or "None" would otherwise turn into a number or None).
    return f"DASK_REMOTE_JOBQUEUE__{key.upper().replace('-', '_')}", repr(value)


def dask_environment(s: ServerSettings) -> dict[str, str]:
    """The `remote-jobqueue` Dask config (site catalogue, gateway, ...) and where the token is.

    Checked against the schema first (`InvalidSettings` names a refused key); unset (None)
    settings are left to the server's own defaults.
    """
    values = config.check({**s.dask, "token-file": s.token_file})
    return dict(_dask(k, v) for k, v in values.items() if v is not None)


def xrootd_environment(s: ServerSettings) -> dict[str, str]:
    """Send every ``root://`` open through the nearest cache (the refresher writes the conf)."""
    env: dict[str, str] = {}
    if s.xrootd_cache:
        env.update(cache_environment(s.xrootd_cache, Path(s.xrootd_plugin_dir)))
    if s.xrootd_origin:
        env["RJQ_XROOTD_ORIGIN"] = s.xrootd_origin
    return env


def server_environment(s: ServerSettings) -> dict[str, str]:
    return {
        "BEARER_TOKEN_FILE": s.token_file,
        "RJQ_RUNTIME_DIR": s.runtime_dir,
        "RJQ_TOKEN_REFRESH_MARGIN": str(s.refresh_margin),
        **condor_environment(s),
        **dask_environment(s),
        **xrootd_environment(s),
    }
