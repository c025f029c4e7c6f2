"""JupyterHub spawners that give each single-user server a fresh token and the facility's settings.

`RemoteJobqueueSpawnerMixin` works over any JupyterHub spawner; `LocalProcessRemoteSpawner` and
(with kubespawner installed) `KubeRemoteSpawner` are ready to use. The classes are loaded lazily,
so the refresher (`python -m remote_jobqueue.spawner.refresher`), which runs in the user's server,
never imports JupyterHub.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KubeRemoteSpawner", "LocalProcessRemoteSpawner", "RemoteJobqueueSpawnerMixin"]

_WHERE = {
    "RemoteJobqueueSpawnerMixin": ".mixin",
    "LocalProcessRemoteSpawner": ".local",
    "KubeRemoteSpawner": ".kube",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
