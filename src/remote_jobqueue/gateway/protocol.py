"""What the gateway and its clients must agree on, kept here so clients never import the server.

The bundle's forwarder and the user's tunnel share these names, formats and rules with the
gateway; a change to any of them is a change of the wire protocol, on both sides at once.
"""

from __future__ import annotations

import re

#: SSH user name meaning "whoever the token says": what bundles and tunnels send.
ANY_USERNAME = "token"
#: Prefix of the authentication banner that carries the refusal reason back to our clients.
AUTH_BANNER_PREFIX = "remote-jobqueue gateway: authentication failed"
#: Marker in that banner for failures worth retrying with the *same* token (issuer down).
AUTH_BANNER_TEMPORARY = "(temporary)"
#: Cluster ids are also SSH "listen hosts", which asyncssh lower-cases: accept only what survives.
CLUSTER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_cluster_id(cluster_id: str) -> str:
    """Return ``cluster_id`` if it can name a cluster, else raise :class:`ValueError`."""
    if not CLUSTER_ID_RE.match(cluster_id):
        raise ValueError(f"invalid cluster id {cluster_id!r}: want {CLUSTER_ID_RE.pattern}")
    return cluster_id


def parse_host_port(address: str, default_port: int = 22) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` → (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    if ":" in host:  # a bare IPv6 address
        return address, default_port
    return host, int(port)
