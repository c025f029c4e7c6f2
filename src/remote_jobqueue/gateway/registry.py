"""The gateway's reverse forwards: in-memory entries, keyed by the *authenticated* identity.

A bundle's reverse forward of ``(cluster_id, logical_port)`` binds **no** socket: it is only an
entry here, and a user's local forward to the same name is routed to the entry's connection.
Because the key always starts with the identity proven by the bearer token (issuer, subject), a
user can neither reach nor shadow anybody else's cluster, whatever names they use.

Within one identity, a cluster belongs to whoever *claimed* it first with its secret (a random
value only the cluster's bundle and client hold): a second connection of the same user (a
token that leaked to a shared server, say) cannot replace a live bundle's forward.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

import asyncssh

from .auth import Identity

#: (issuer, subject): whose entries these are.
Owner = tuple[str, str]

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
        user: Identity,
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
    def key(self) -> tuple[Owner, str, int]:
        return (self.user.key, self.cluster_id, self.port)

    def get_port(self) -> int:
        return self.port

    def close(self) -> None:
        self.registry.remove(self)

    async def wait_closed(self) -> None:
        return None


class RegistryFull(Exception):
    """A user holds ``max_per_user`` forwards already (each costs gateway memory)."""


class ClaimRefused(Exception):
    """The cluster is someone's already: another secret claimed it first."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Registry:
    """Reverse forwards by (identity, cluster id, logical port); the namespace *is* the user.

    Claims (the digest of each cluster's secret) are kept while the cluster has entries and
    ``claim_ttl`` seconds after its last entry went, so a bundle reconnecting after a network
    cut finds its claim.
    """

    def __init__(self, max_per_user: int = 256, claim_ttl: float = 3600.0) -> None:
        self.max_per_user = max_per_user
        self.claim_ttl = claim_ttl
        self._entries: dict[tuple[Owner, str, int], ReverseForward] = {}
        self._claims: dict[tuple[Owner, str], tuple[bytes, float]] = {}

    def claim(self, user: Identity, cluster_id: str, secret: str) -> bytes:
        """Accept ``secret`` as the proof of being cluster ``cluster_id``'s bundle (or client),
        or raise :class:`ClaimRefused` if another secret claimed it first; returns the digest
        the caller shows again to :meth:`holds`."""
        now = time.monotonic()
        live = {(k[0], k[1]) for k in self._entries}
        self._claims = {
            k: v for k, v in self._claims.items() if k in live or now - v[1] < self.claim_ttl
        }
        key = (user.key, cluster_id)
        digest = _digest(secret)
        known = self._claims.get(key)
        if known is not None and not hmac.compare_digest(known[0], digest):
            raise ClaimRefused(f"cluster {cluster_id!r} of {user} is held by another bundle")
        if known is None and sum(k[0] == user.key for k in self._claims) >= self.max_per_user:
            raise RegistryFull(f"{user} already has {self.max_per_user} clusters")
        self._claims[key] = (digest, now)
        return digest

    def holds(self, user: Identity, cluster_id: str, digest: bytes | None) -> bool:
        """Is ``digest`` the current claim of ``cluster_id``? (A claim can be lost: pruned
        after ``claim_ttl`` with no entries, then taken by another secret.)"""
        known = self._claims.get((user.key, cluster_id))
        return known is not None and digest is not None and hmac.compare_digest(known[0], digest)

    def _touch(self, owner: Owner, cluster_id: str) -> None:
        """The claim's clock starts again whenever the cluster's entries change."""
        key = (owner, cluster_id)
        if key in self._claims:
            self._claims[key] = (self._claims[key][0], time.monotonic())

    def register(
        self,
        user: Identity,
        cluster_id: str,
        port: int,
        conn: asyncssh.SSHServerConnection,
        peer: str = "",
    ) -> ReverseForward:
        """Add (or replace: a reconnecting bundle wins over its stale self) an entry.

        The caller has checked that ``conn`` claimed ``cluster_id`` (see :meth:`claim`)."""
        entry = ReverseForward(self, user, cluster_id, port, conn, peer)
        again = "re-" if entry.key in self._entries else ""
        if not again and sum(k[0] == user.key for k in self._entries) >= self.max_per_user:
            raise RegistryFull(f"{user} already has {self.max_per_user} forwards")
        self._entries[entry.key] = entry
        self._touch(user.key, cluster_id)
        log.info(
            "cluster %s port %d of %s %sregistered from %s", cluster_id, port, user, again, peer
        )
        return entry

    def lookup(self, user: Identity, cluster_id: str, port: int) -> ReverseForward | None:
        return self._entries.get((user.key, cluster_id, port))

    def remove(self, entry: ReverseForward) -> None:
        """Drop ``entry`` if it is still current; a replaced entry's late close is a no-op."""
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
            self._touch(entry.user.key, entry.cluster_id)
            log.info("cluster %s port %d of %s unregistered", *entry.key[1:], entry.user)

    def drop_connection(self, conn: asyncssh.SSHServerConnection) -> None:
        """Forget every entry served by ``conn`` (it is gone)."""
        for entry in [e for e in self._entries.values() if e.conn is conn]:
            self.remove(entry)

    def list(self, user: Identity) -> list[Registration]:
        """The user's own reverse forwards, sorted by cluster and port."""
        return sorted(
            (
                Registration(e.cluster_id, e.port, e.peer, e.since)
                for (owner, _, _), e in self._entries.items()
                if owner == user.key
            ),
            key=lambda r: (r.cluster_id, r.port),
        )

    def __len__(self) -> int:
        return len(self._entries)
