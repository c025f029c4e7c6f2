"""The bundle's side of the gateway: offer the scheduler's ports to their owner, from the site.

The site accepts no inbound connections, so the bundle dials out to the gateway and asks for a
reverse forward of each logical service port (8786 scheduler, 8787 dashboard) under the
cluster's id. The gateway binds nothing: it sends each of the owner's tunnel connections back
down this SSH connection as a forwarded channel, and asyncssh connects it to the local service.
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
    """Keeps ``services`` (logical port → local ``(host, port)``) registered at the gateway.

    Registration happens on every (re)connect before ``connected`` is set, so ``connected``
    means "users can reach us now". The token is re-read on each connect: the bundle's token
    file is refreshed from outside, and a reconnect after expiry must use the new one.
    """

    services: Mapping[int, tuple[str, int]]

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.services:
            raise ValueError("nothing to forward: services is empty")
        for port in self.services:
            if not 0 < port < 65536:
                raise ValueError(f"invalid logical port {port}")
        self.services = dict(self.services)

    async def _on_connect(self, conn: asyncssh.SSHClientConnection) -> None:
        for logical, (host, port) in self.services.items():
            try:
                await conn.forward_remote_port(self.cluster_id, logical, host, port)
            except asyncssh.ChannelListenError as err:
                raise TunnelError(
                    f"gateway refused to register {self.cluster_id} port {logical}: {err}"
                ) from None
        mapping = ", ".join(f"{p} -> {h}:{q}" for p, (h, q) in self.services.items())
        log.info("%r: registered %s", self, mapping)
