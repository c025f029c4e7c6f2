"""SSH gateway, bundle-side reverse forwarder and user-side tunnel.

See :mod:`.registry` for why the gateway binds no port per cluster and how a user is confined to
their own clusters, and :mod:`.server` for how their connections are joined.
"""

from .auth import (
    AuthenticationFailed,
    Authenticator,
    ChainAuthenticator,
    Identity,
    JWTAuthenticator,
)
from .cli import main
from .forwarder import DASHBOARD_PORT, SCHEDULER_PORT, ReverseForwarder
from .hostkeys import (
    host_key_fingerprint,
    known_hosts_line,
    load_host_keys,
    load_or_create_host_key,
    public_key_text,
)
from .limits import AddressLimits
from .protocol import ANY_USERNAME, check_cluster_id
from .registry import ClaimRefused, Registration, Registry, RegistryFull
from .server import Gateway, GatewayServer, serve
from .tunnel import (
    Backoff,
    GatewayLink,
    LinkOptions,
    Tunnel,
    TunnelAuthError,
    TunnelError,
    TunnelHostKeyError,
    TunnelUnreachable,
    connect_gateway,
)

__all__ = [
    "ANY_USERNAME",
    "DASHBOARD_PORT",
    "SCHEDULER_PORT",
    "AddressLimits",
    "AuthenticationFailed",
    "Authenticator",
    "Backoff",
    "ChainAuthenticator",
    "ClaimRefused",
    "Gateway",
    "GatewayLink",
    "GatewayServer",
    "Identity",
    "JWTAuthenticator",
    "LinkOptions",
    "Registration",
    "Registry",
    "RegistryFull",
    "ReverseForwarder",
    "Tunnel",
    "TunnelAuthError",
    "TunnelError",
    "TunnelHostKeyError",
    "TunnelUnreachable",
    "check_cluster_id",
    "connect_gateway",
    "host_key_fingerprint",
    "known_hosts_line",
    "load_host_keys",
    "load_or_create_host_key",
    "main",
    "public_key_text",
    "serve",
]
