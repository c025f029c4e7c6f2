"""SSH gateway, bundle-side reverse forwarder and user-side tunnel.

See :mod:`.server` for why the gateway binds no port per cluster and how a user is confined to
their own clusters.
"""

from .forwarder import DASHBOARD_PORT, SCHEDULER_PORT, ReverseForwarder
from .server import (
    ANY_USERNAME,
    AuthenticationFailed,
    Authenticator,
    ChainAuthenticator,
    Gateway,
    GatewayServer,
    JWTAuthenticator,
    Registration,
    Registry,
    RegistryFull,
    check_cluster_id,
    host_key_fingerprint,
    known_hosts_line,
    load_or_create_host_key,
    main,
    public_key_text,
    serve,
)
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
    load_host_keys,
)

__all__ = [
    "ANY_USERNAME",
    "DASHBOARD_PORT",
    "SCHEDULER_PORT",
    "AuthenticationFailed",
    "Authenticator",
    "Backoff",
    "ChainAuthenticator",
    "Gateway",
    "GatewayLink",
    "GatewayServer",
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
