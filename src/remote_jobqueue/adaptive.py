"""What `RemoteHTCondorCluster.adapt` returns: the bounds, and a way to stop.

Adaptivity itself runs at the site (`distributed`'s `Adaptive` on the bundle's site cluster),
next to the scheduler. The client keeps only this handle, returned at once in both modes with
``.minimum`` / ``.maximum`` (as dask-labextension and `distributed`'s widget read them); in async
code it can also be awaited, to wait until the site has taken the request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from distributed.core import Status

if TYPE_CHECKING:
    from .cluster import RemoteHTCondorCluster


class RemoteAdaptive:
    def __init__(self, cluster: RemoteHTCondorCluster, minimum: int, maximum: int) -> None:
        self.cluster, self.minimum, self.maximum = cluster, minimum, maximum
        #: The request to the site: its answer in sync code, a running task in async code.
        self.request: Any = None
        self.stopped = False

    def stop(self, reason: str = "stopped by the user") -> Any:
        """Stop adapting at the site; the workers stay as they are."""
        if self.stopped:
            return None
        self.stopped = True
        cluster = self.cluster
        if cluster._adaptive is self:
            cluster._adaptive = None
        if cluster.status != Status.running or cluster.lost:
            return None  # closing: the bundle stops adapting with everything else
        return cluster._request(cluster._adapt_stop)

    @property
    def periodic_callback(self) -> bool:
        """Truthy while adapting: what `distributed`'s cluster widget asks."""
        return not self.stopped

    def __await__(self):
        async def _() -> RemoteAdaptive:
            if isinstance(self.request, asyncio.Future):
                await self.request
            return self

        return _().__await__()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else "adapting"
        return f"<RemoteAdaptive {state} minimum={self.minimum} maximum={self.maximum}>"
