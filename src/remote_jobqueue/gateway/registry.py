"""The gateway's reverse forwards: in-memory entries, keyed by the *authenticated* user.

A bundle's reverse forward of ``(cluster_id, logical_port)`` binds **no** socket: it is only an
entry here, and a user's local forward to the same name is routed to the entry's connection.
Because the key always starts with the identity proven by the bearer token, a user can neither
reach nor shadow anybody else's cluster, whatever names they use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import asyncssh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """What a user may see of one of their reverse forwards."""

    cluster_id: str
    port: int
    peer: str
    since: float


class ReverseForward(asyncssh.SSHListener):
    """A reverse forward that listens on nothing: just the registry entry of one bundle port.

    asyncssh closes it when the bundle cancels the forward or its connection goes away, and
    closing only removes the entry if it is still the current one (a reconnect may have
    replaced it already).
    """

    def __init__(
        self,
        registry: Registry,
        user: str,
        cluster_id: str,
        port: int,
        conn: asyncssh.SSHServerConnection,
        peer: str,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.user = user
        self.cluster_id = cluster_id
        self.port = port
        self.conn = conn
        self.peer = peer
        self.since = time.time()

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.user, self.cluster_id, self.port)

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        self.registry.remove(self)

    async def wait_closed(self) -> None:
        return None


class RegistryFull(Exception):
    """A user holds ``max_per_user`` forwards already (each costs gateway memory)."""


class Registry:
    """Reverse forwards by (user, cluster id, logical port); the namespace *is* the user."""

    def __init__(self, max_per_user: int = 256) -> None:
        self.max_per_user = max_per_user
        self._entries: dict[tuple[str, str, int], ReverseForward] = {}

    def register(
        self,
        user: str,
        cluster_id: str,
        port: int,
        conn: asyncssh.SSHServerConnection,
        peer: str = "",
    ) -> ReverseForward:
        """Add (or replace: a reconnecting bundle wins over its stale self) an entry."""
        entry = ReverseForward(self, user, cluster_id, port, conn, peer)
        again = "re-" if entry.key in self._entries else ""
        if not again and sum(k[0] == user for k in self._entries) >= self.max_per_user:
            raise RegistryFull(f"{user} already has {self.max_per_user} forwards")
        self._entries[entry.key] = entry
        log.info(
            "cluster %s port %d of %s %sregistered from %s", cluster_id, port, user, again, peer
        )
        return entry

    def lookup(self, user: str, cluster_id: str, port: int) -> ReverseForward | None:
        return self._entries.get((user, cluster_id, port))

    def remove(self, entry: ReverseForward) -> None:
        """Drop ``entry`` if it is still current; a replaced entry's late close is a no-op."""
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
            log.info("cluster %s port %d of %s unregistered", *entry.key[1:], entry.user)

    def drop_connection(self, conn: asyncssh.SSHServerConnection) -> None:
        """Forget every entry served by ``conn`` (it is gone)."""
        for entry in [e for e in self._entries.values() if e.conn is conn]:
            self.remove(entry)

    def list(self, user: str) -> list[Registration]:
        """The user's own reverse forwards, sorted by cluster and port."""
        return sorted(
            (
                Registration(e.cluster_id, e.port, e.peer, e.since)
                for (owner, _, _), e in self._entries.items()
                if owner == user
            ),
            key=lambda r: (r.cluster_id, r.port),
        )

    def __len__(self) -> int:
        return len(self._entries)
