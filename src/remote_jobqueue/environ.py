"""Which environment variables are credentials, for processes that must not inherit them.

One rule for the spawner (a user's server gets no Hub or OAuth secret from the Hub's
configuration) and for the local bundle (tasks are code, and code reads its environment: a
cluster's processes get none of the notebook's tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Names the spawner refuses to pass on, whatever the Hub's configuration says.
SECRET_MARKERS = ("CLIENT_SECRET", "REFRESH_TOKEN", "CRYPT_KEY", "ACCESS_TOKEN", "BEARER_TOKEN=")
#: Environment variables that may hold a token only by name (they name files).
TOKEN_FILE_VARIABLES = ("BEARER_TOKEN_FILE", "_CONDOR_SCITOKENS_FILE")
#: The user's own Hub API token: their server needs it, their cluster's tasks do not.
HUB_TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


def looks_secret(name: str, value: Any) -> bool:
    """Would passing this variable hand the user a credential they must not hold?

    ``value`` is a string, or (KubeSpawner's ``environment``) a Kubernetes ``EnvVar`` as a
    mapping: its ``value``, or a ``valueFrom`` that reads a Secret, which is a credential under
    any name (a Secret meant for users belongs in a volume, as the token file is).
    """
    if name in TOKEN_FILE_VARIABLES:
        return False
    upper = f"{name}=".upper()
    if name.upper() == "BEARER_TOKEN" or any(m in upper for m in SECRET_MARKERS):
        return True
    if isinstance(value, Mapping):
        source = value.get("valueFrom") or value.get("value_from") or {}
        if isinstance(source, Mapping) and (
            source.get("secretKeyRef") or source.get("secret_key_ref")
        ):
            return True
        value = value.get("value")
    if not isinstance(value, str):
        return False
    return value.startswith("eyJ") and value.count(".") == 2  # a JWT under any name


def without_secrets(
    env: Mapping[str, Any], also: Iterable[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """``env`` minus credentials (and the names in ``also``); and the names dropped."""
    extra = set(also)
    dropped = [k for k, v in env.items() if k in extra or looks_secret(k, v)]
    return {k: v for k, v in env.items() if k not in dropped}, dropped


def for_cluster_processes(env: Mapping[str, str]) -> dict[str, str]:
    """What a cluster's own processes (bundle, workers) inherit: no credential at all."""
    return without_secrets(env, HUB_TOKEN_VARIABLES)[0]
