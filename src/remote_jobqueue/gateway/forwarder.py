"""The bundle's side of the gateway: offer the scheduler's ports to their owner, from the site.

The site accepts no inbound connections, so the bundle dials out to the gateway and asks for a
reverse forward of each logical service port (8786 scheduler, 8787 dashboard) under the
cluster's id. The gateway binds nothing: it sends each of the owner's tunnel connections back
down this SSH connection as a forwarded channel, and asyncssh connects it to the local service.
Before registering, the forwarder claims the cluster with its secret (``@claim``), so that no
other connection, even of the same user, can take the cluster's name over while we hold it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import asyncssh

from .tunnel import GatewayLink, TunnelError

log = logging.getLogger(__name__)

#: Dask's conventional ports, used as *logical* ports: the names users ask the gateway for.
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787


@dataclass(eq=False, repr=False)
class ReverseForwarder(GatewayLink):
    """Keeps ``services`` (logical port → local ``(host, port)`` or UNIX socket path)
    registered at the gateway.

    Registration happens on every (re)connect before ``connected`` is set, so ``connected``
    means "users can reach us now". The token is re-read on each connect: the bundle's token
    file is refreshed from outside, and a reconnect after expiry must use the new one.
    """

    services: Mapping[int, tuple[str, int] | str]
    #: The cluster's secret, held by its bundle and client only (at least 16 characters).
    claim_secret: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.claim_secret) < 16:
            raise ValueError("claim_secret must have at least 16 characters")
        if not self.services:
            raise ValueError("nothing to forward: services is empty")
        for port in self.services:
            if not 0 < port < 65536:
                raise ValueError(f"invalid logical port {port}")
        self.services = dict(self.services)

    async def _on_connect(self, conn: asyncssh.SSHClientConnection) -> None:
        await self._claim(conn, self.claim_secret)
        for logical, target in self.services.items():
            try:
                if isinstance(target, str):
                    await conn.forward_remote_port_to_path(self.cluster_id, logical, target)
                else:
                    await conn.forward_remote_port(self.cluster_id, logical, *target)
            except asyncssh.ChannelListenError as err:
                raise TunnelError(
                    f"gateway refused to register {self.cluster_id} port {logical}: {err}"
                ) from None
        mapping = ", ".join(f"{p} -> {_target(t)}" for p, t in self.services.items())
        log.info("%r: registered %s", self, mapping)


def _target(target: tuple[str, int] | str) -> str:
    return target if isinstance(target, str) else f"{target[0]}:{target[1]}"
