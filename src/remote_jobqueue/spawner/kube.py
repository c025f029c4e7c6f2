"""`KubeRemoteSpawner`: the mixin over KubeSpawner (needs ``pip install 'remote-jobqueue[kube]'``).

In a pod the Hub cannot write files, so the refresher writes the first token too, pulled from
the Hub API. The pod gets what that needs:

- **The command.** KubeSpawner's ``cmd`` is None by default (the image's command) and becomes
  the container's ``args`` when set, which keeps the image's ENTRYPOINT (tini, docker-stacks'
  ``start.sh``). The Hub cannot read an image's CMD, so the refresher wraps ``cmd`` if set, or
  else `default_cmd` (``jupyterhub-singleuser``, the CMD of docker/lab and of the Zero to
  JupyterHub images), followed by ``args``: ``python3 -m remote_jobqueue.spawner.refresher --
  jupyterhub-singleuser ...``. The refresher is the image's ``python3`` (on its PATH), not the
  Hub's.
- **The token's volume.** A memory-backed ``emptyDir`` (`runtime_volume_name`), mounted in the
  notebook container only, at the parent of ``runtime_dir``: the kubelet makes an emptyDir
  root's and world-writable, so the refresher makes ``runtime_dir`` in it itself, the user's
  and 0700, and the token file 0600. The pod runs as the user (``uid``, ``fs_gid``: 1000 and
  100 by default, as Zero to JupyterHub). Not a Secret: a Secret volume is read-only (the
  refresher replaces the file as the token is renewed), would keep the token in the API server
  for anyone who may read the namespace's Secrets, and would make the Hub push every new token.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

try:
    from kubespawner import KubeSpawner
except ImportError as err:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "KubeRemoteSpawner needs kubespawner: pip install 'remote-jobqueue[kube]'"
    ) from err

from kubernetes_asyncio.client.models import (
    V1EmptyDirVolumeSource,
    V1Volume,
    V1VolumeMount,
)
from traitlets import Unicode, default

from .mixin import RemoteJobqueueSpawnerMixin

#: The name of KubeSpawner's single-user container in the pod.
NOTEBOOK_CONTAINER = "notebook"


class KubeRemoteSpawner(RemoteJobqueueSpawnerMixin, KubeSpawner):
    """`KubeSpawner` with remote-jobqueue's token file, refresher and settings."""

    runtime_volume_name = Unicode(
        "rjq-runtime", help="Name of the pod's emptyDir volume that holds runtime_dir."
    ).tag(config=True)
    runtime_volume_size = Unicode(
        "16Mi", help="sizeLimit of that volume (memory: the token and the XRootD plugin conf)."
    ).tag(config=True)

    @default("refresher_python")
    def _refresher_python_default(self) -> str:
        return "python3"  # the image's, found on its PATH: the Hub's path means nothing there

    @default("uid")
    def _uid_default(self) -> int:
        return 1000

    @default("fs_gid")
    def _fs_gid_default(self) -> int:
        return 100

    def runtime_mount_path(self) -> str:
        """Where the volume is mounted: the parent of the user's ``runtime_dir``."""
        runtime_dir = PurePosixPath(self.remote_jobqueue_settings().runtime_dir)
        if not runtime_dir.is_absolute() or runtime_dir.parent == runtime_dir.parent.parent:
            raise ValueError(
                f"runtime_dir {runtime_dir} must be an absolute path below a directory of its "
                "own (the pod mounts a volume at its parent)"
            )
        return str(runtime_dir.parent)

    def start(self) -> Any:
        # Not the mixin's wrap around start: KubeSpawner's start first loads the user's profile,
        # whose kubespawner_override may set cmd (or default_cmd), and then builds the pod. The
        # refresher wraps in get_pod_manifest, after that. (KubeSpawner's own start: it keeps
        # the future that progress() watches.)
        return KubeSpawner.start(self)

    async def get_pod_manifest(self) -> Any:
        with self.refresher_wrapped_cmd():
            pod = await super().get_pod_manifest()
        self._add_runtime_volume(pod)
        return pod

    def _add_runtime_volume(self, pod: Any) -> None:
        name, path = self.runtime_volume_name, self.runtime_mount_path()
        container = next(c for c in pod.spec.containers if c.name == NOTEBOOK_CONTAINER)
        mounts = list(container.volume_mounts or [])
        taken = [m for m in mounts if _get(m, "mount_path", "mountPath") == path]
        if taken:
            raise ValueError(
                f"{path} is already a mount point in {self.user.name}'s pod "
                f"({_get(taken[0], 'name')}): the token's volume goes there; change runtime_dir"
            )
        volumes = list(pod.spec.volumes or [])
        if any(_get(v, "name") == name for v in volumes):
            raise ValueError(f"the pod already has a volume {name} (runtime_volume_name)")
        volumes.append(
            V1Volume(
                name=name,
                empty_dir=V1EmptyDirVolumeSource(
                    medium="Memory", size_limit=self.runtime_volume_size
                ),
            )
        )
        container.volume_mounts = [*mounts, V1VolumeMount(name=name, mount_path=path)]
        pod.spec.volumes = volumes


def _get(obj: Any, *names: str) -> Any:
    """A field of a Kubernetes model object or of the dict KubeSpawner may have kept."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None
