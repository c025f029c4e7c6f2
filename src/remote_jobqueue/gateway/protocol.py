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
#: The JupyterHub custom scope a Hub API token needs (for its owner) to log in to the gateway:
#: the user's own server and clients hold it, a token a shared server gets from a visitor not.
GATEWAY_SCOPE = "custom:remote-jobqueue:gateway"
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


#: Control channels: ``direct-tcpip`` opens to these names reach the gateway itself, never a
#: cluster (the ``@`` cannot be in a cluster id). Each takes one request line, answers one line.
#: ``RENEW_HOST``: "<token>" → "ok <expiry unix time>" | "refused: <reason>"; the connection's
#: login is extended to the new token's expiry if it names the same identity.
RENEW_HOST = "@renew"
#: ``CLAIM_HOST``: "<cluster id> <secret>" → "ok" | "refused: <reason>"; proves this
#: connection is the bundle of that cluster (the first claim's secret is the one that counts),
#: which registering a reverse forward of the cluster requires.
CLAIM_HOST = "@claim"
#: ``WHOAMI_HOST``: any line → "ok <JSON>": the connection's identity as the gateway sees it,
#: ``{"issuer", "subject", "name", "expires_at"}`` (when the login ends unless renewed).
WHOAMI_HOST = "@whoami"
#: Longest request line accepted on a control channel (a JWT fits many times over).
CONTROL_LINE_MAX = 16384
