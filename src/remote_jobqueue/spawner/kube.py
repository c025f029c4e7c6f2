"""`KubeRemoteSpawner`: the mixin over KubeSpawner (needs ``pip install jupyterhub-kubespawner``).

In a pod the Hub cannot write files, so the refresher writes the first token too, pulled from
the Hub API; ``runtime_dir`` should be an ``emptyDir`` volume (memory-backed) mounted there.
"""

from __future__ import annotations

try:
    from kubespawner import KubeSpawner
except ImportError as err:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "KubeRemoteSpawner needs kubespawner: pip install 'remote-jobqueue[kube]'"
    ) from err

from .mixin import RemoteJobqueueSpawnerMixin


class KubeRemoteSpawner(RemoteJobqueueSpawnerMixin, KubeSpawner):
    """`KubeSpawner` with remote-jobqueue's token file, refresher and settings."""
