"""Dask configuration of remote-jobqueue: defaults from `remote-jobqueue.yaml`, as Dask expects.

Values come, in order of precedence, from keyword arguments, then Dask config (YAML files in
`~/.config/dask`, `DASK_CONFIG`, `DASK_REMOTE_JOBQUEUE__*` environment variables), then the
defaults shipped with the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

_DEFAULTS_FILE = Path(__file__).with_name("remote-jobqueue.yaml")

with _DEFAULTS_FILE.open() as _f:
    defaults = yaml.safe_load(_f)

dask.config.update_defaults(defaults)


def get(key: str, override: Any = None) -> Any:
    """``override`` if given, else ``remote-jobqueue.<key>`` from Dask config."""
    if override is not None:
        return override
    return dask.config.get(f"remote-jobqueue.{key}")
