"""The SSH gateway: a rendezvous point that bundles and users both dial *out* to.

Sites sit behind NAT and JupyterLab sits behind the hub, so neither can reach the other; both can
reach the gateway. A bundle asks for a reverse forward of ``(cluster_id, logical_port)``; a user
asks for a local forward to the same name. The gateway binds **no** socket for either: a reverse
forward is only an entry in an in-memory :class:`Registry`, keyed by the *authenticated* user,
and a local forward is spliced in-process onto a channel opened back to the bundle's connection.
Because the key always starts with the identity proven by the bearer token, a user can neither
reach nor shadow anybody else's cluster, whatever names they use.

Everything else SSH can do (shells, exec, subsystems, agent / X11 / UNIX-socket forwarding,
public-key or keyboard-interactive login) is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import stat
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import asyncssh

from ..tokens import (
    IssuerUnavailable,
    TokenError,
    TokenValidator,
    redact,
    write_private_file,
)

log = logging.getLogger(__name__)

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


def _loggable_name(name: str) -> str:
    """A user name fit for logs: people do paste tokens into the user-name field."""
    return name if len(name) <= 64 else redact(name)


_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


class _RedactJWTs(logging.Filter):
    """Replaces JWT-shaped text in records: asyncssh logs user names, and a pasted token is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "eyJ" in message:
            record.msg, record.args = _JWT_RE.sub(lambda m: redact(m.group()), message), None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put the JWT-redacting filter on asyncssh's logger (idempotent)."""
    logger = logger or logging.getLogger("asyncssh")
    if not any(isinstance(f, _RedactJWTs) for f in logger.filters):
        logger.addFilter(_RedactJWTs())


# Authentication -------------------------------------------------------------------------------


class AuthenticationFailed(Exception):
    """A secret was refused; ``reason`` is sent to the client and logged, so never a secret.

    ``temporary`` marks failures where the same secret may succeed later (issuer unreachable),
    so clients know whether retrying without a new token makes sense.
    """

    def __init__(self, reason: str, *, temporary: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


@runtime_checkable
class Authenticator(Protocol):
    """Turns (SSH user name, password = bearer token) into the identity that owns clusters."""

    async def authenticate(self, username: str, secret: str) -> str:
        """Return the user identity, or raise :class:`AuthenticationFailed`."""
        ...


class JWTAuthenticator:
    """Accepts OIDC access tokens of one issuer and audience (see :class:`TokenValidator`).

    The identity is ``identity_claim`` (``preferred_username``, which is what JupyterHub's
    GenericOAuthenticator names users by, so lab and bundle land in the same namespace), or
    ``fallback_claim`` (``sub``) for issuers that do not send it. The SSH user name is checked by
    the server, not here, so that every authenticator gets the same rule.
    """

    def __init__(
        self,
        validator: TokenValidator,
        identity_claim: str = "preferred_username",
        fallback_claim: str | None = "sub",
    ) -> None:
        self.validator = validator
        self.identity_claim = identity_claim
        self.fallback_claim = fallback_claim

    async def authenticate(self, username: str, secret: str) -> str:
        try:
            claims = await self.validator.avalidate(secret)
        except IssuerUnavailable as err:
            raise AuthenticationFailed(
                f"cannot check the token now: {err}", temporary=True
            ) from err
        except TokenError as err:
            raise AuthenticationFailed(str(err)) from err
        for claim in (self.identity_claim, self.fallback_claim):
            identity = claims.get(claim) if claim else None
            if isinstance(identity, str) and identity:
                return identity
        raise AuthenticationFailed(f"token has no {self.identity_claim!r} claim")


class ChainAuthenticator:
    """Tries authenticators in order; the first that accepts wins.

    The seam for a second kind of secret (JupyterHub API tokens checked against the Hub): each
    authenticator refuses what it does not understand, and the combined reasons say why none
    accepted. Temporary only if some authenticator's failure was temporary.
    """

    def __init__(self, *authenticators: Authenticator) -> None:
        if not authenticators:
            raise ValueError("ChainAuthenticator needs at least one authenticator")
        self.authenticators = authenticators

    async def authenticate(self, username: str, secret: str) -> str:
        failures: list[AuthenticationFailed] = []
        for authenticator in self.authenticators:
            try:
                return await authenticator.authenticate(username, secret)
            except AuthenticationFailed as err:
                failures.append(err)
        raise AuthenticationFailed(
            "; ".join(f.reason for f in failures), temporary=any(f.temporary for f in failures)
        )


# Registry of reverse forwards -----------------------------------------------------------------


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


# Splicing a user's channel onto a bundle's channel ----------------------------------------------


class _Splice(asyncssh.SSHTCPSession[bytes]):
    """One end of two SSH channels joined in the gateway, with flow control and half-close.

    The bundle's end is opened first and holds its data (reading paused) until the user's end
    exists; each end's write back-pressure pauses reading on the other.
    """

    def __init__(self) -> None:
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.peer: _Splice | None = None
        self.eof = False
        self.lost = False

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan
        if self.peer is None:
            chan.pause_reading()
        elif self.peer.lost or self.peer.chan is None:
            chan.close()
        else:
            self.peer.chan.resume_reading()

    def _peer_chan(self) -> asyncssh.SSHTCPChannel[bytes] | None:
        chan = self.peer.chan if self.peer else None
        return chan if chan is not None and not chan.is_closing() else None

    def data_received(self, data: bytes, datatype: int | None) -> None:
        peer = self._peer_chan()
        if peer is None:
            if self.chan is not None:
                self.chan.close()
            return
        peer.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self._peer_chan()
        if peer is not None:
            peer.write_eof()
        if self.peer is not None and self.peer.eof:
            self._close_both()
        return True  # keep our sending half open: TCP half-close

    def pause_writing(self) -> None:
        if peer := self._peer_chan():
            peer.pause_reading()

    def resume_writing(self) -> None:
        if peer := self._peer_chan():
            peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.close()

    def _close_both(self) -> None:
        for end in (self, self.peer):
            if end is not None and end.chan is not None:
                end.chan.close()


# The SSH server ---------------------------------------------------------------------------------


class GatewayServer(asyncssh.SSHServer):
    """One instance per SSH connection: authenticates it, then registers or routes forwards."""

    def __init__(self, authenticator: Authenticator, registry: Registry, gateway: Gateway) -> None:
        self.authenticator = authenticator
        self.registry = registry
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.user: str | None = None
        self.peer = "?"
        self.closed = False

    # connection lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:  # type: ignore[override]
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.gateway.sessions.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway.sessions.discard(self)
        if self.conn is not None:
            self.registry.drop_connection(self.conn)
        if self.user is not None:
            log.info(
                "connection of %s from %s closed%s", self.user, self.peer, f": {exc}" if exc else ""
            )

    # authentication: password = bearer token, nothing else

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        try:
            identity = await self.authenticator.authenticate(username, password)
            if username not in (ANY_USERNAME, identity):
                raise AuthenticationFailed(
                    f"user name {_loggable_name(username)!r} is not the token's identity; "
                    f"use {identity!r} or {ANY_USERNAME!r}"
                )
        except AuthenticationFailed as err:
            self._refuse(username, err.reason, err.temporary)
            return False
        except Exception as err:  # a broken authenticator must not leak the secret or crash
            log.error(
                "authenticator %s raised %s", type(self.authenticator).__name__, type(err).__name__
            )
            self._refuse(username, "internal error while checking the token", True)
            return False
        self.user = identity
        log.info("%s authenticated from %s", identity, self.peer)
        return True

    def _refuse(self, username: str, reason: str, temporary: bool) -> None:
        log.warning(
            "authentication of %s from %s failed: %s", _loggable_name(username), self.peer, reason
        )
        banner = f"{AUTH_BANNER_PREFIX}{' ' + AUTH_BANNER_TEMPORARY if temporary else ''}: {reason}"
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.send_auth_banner(banner + "\n")

    # forwards

    def server_requested(self, listen_host: str, listen_port: int) -> ReverseForward | bool:
        """A bundle offers ``listen_port`` of cluster ``listen_host``: remember, bind nothing."""
        if self.user is None or self.conn is None or self.closed:
            return False
        if not CLUSTER_ID_RE.match(listen_host) or not 0 < listen_port < 65536:
            log.warning(
                "%s asked for a reverse forward of %r port %d: refused",
                self.user,
                listen_host,
                listen_port,
            )
            return False
        try:
            return self.registry.register(self.user, listen_host, listen_port, self.conn, self.peer)
        except RegistryFull as err:
            log.warning("reverse forward refused: %s", err)
            return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        """Route a user's local forward to *their own* cluster, or refuse it."""
        cluster_id = dest_host.lower()
        entry = self.registry.lookup(self.user, cluster_id, dest_port) if self.user else None
        if entry is None:
            log.info(
                "%s asked for %s port %d: no such cluster of theirs",
                self.user,
                cluster_id,
                dest_port,
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"no cluster {cluster_id!r} with port {dest_port} registered for you",
            )
        return self._splice(entry, orig_host, orig_port)

    async def _splice(
        self, entry: ReverseForward, orig_host: str, orig_port: int
    ) -> asyncssh.SSHTCPSession[bytes]:
        user_end, bundle_end = _Splice(), _Splice()
        try:
            await entry.conn.create_connection(
                lambda: bundle_end, entry.cluster_id, entry.port, orig_host, orig_port
            )
        except asyncssh.ChannelOpenError as err:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED,
                f"cluster {entry.cluster_id!r} port {entry.port} did not answer: {err.reason}",
            ) from None
        except (asyncssh.Error, OSError) as err:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED,
                f"cluster {entry.cluster_id!r} port {entry.port} is unreachable: {err}",
            ) from None
        if self.closed or self.conn is None or self.conn.is_closed():
            # asyncssh drops our session if the user left meanwhile: do not leak the other end.
            if bundle_end.chan is not None:
                bundle_end.chan.close()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "connection closed")
        user_end.peer, bundle_end.peer = bundle_end, user_end
        return user_end

    # everything else: refused

    def session_requested(self) -> bool:
        log.warning(
            "%s from %s asked for a session (shell/exec/subsystem): refused", self.user, self.peer
        )
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "this gateway only forwards cluster ports"
        )

    def unix_connection_requested(self, dest_path: str) -> bool:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "UNIX socket forwarding is not allowed"
        )

    def unix_server_requested(self, listen_path: str) -> bool:
        return False


class Gateway:
    """A running gateway: the listening socket, its registry and its live connections."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.acceptor: asyncssh.SSHAcceptor | None = None
        self.sessions: set[GatewayServer] = set()

    @property
    def port(self) -> int:
        assert self.acceptor is not None
        return self.acceptor.get_port()

    def disconnect(self, user: str | None = None) -> int:
        """Drop every connection (of ``user`` only, if given); returns how many."""
        victims = [s for s in self.sessions if user is None or s.user == user]
        for session in victims:
            if session.conn is not None:
                session.conn.abort()
        return len(victims)

    def close(self) -> None:
        """Stop listening and drop all connections (asyncssh's acceptor keeps them otherwise)."""
        if self.acceptor is not None:
            self.acceptor.close()
        self.disconnect()

    async def wait_closed(self) -> None:
        if self.acceptor is not None:
            await self.acceptor.wait_closed()
        for session in list(self.sessions):
            if session.conn is not None:
                await session.conn.wait_closed()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def serve(
    host: str,
    port: int,
    host_key_path: str | os.PathLike[str],
    authenticator: Authenticator,
    *,
    registry: Registry | None = None,
    login_timeout: float = 30.0,
    keepalive_interval: float = 30.0,
    keepalive_count_max: int = 3,
) -> tuple[Gateway, Registry]:
    """Start the gateway on ``host:port`` (0 picks a port: see ``Gateway.port``).

    Keepalives make the gateway notice bundles whose NAT silently dropped them, so their
    registrations go away instead of black-holing users.
    """
    install_log_redaction()
    registry = Registry() if registry is None else registry
    gateway = Gateway(registry)
    host_key = load_or_create_host_key(host_key_path)
    gateway.acceptor = await asyncssh.listen(
        host,
        port,
        server_factory=lambda: GatewayServer(authenticator, registry, gateway),
        server_host_keys=[host_key],
        password_auth=True,
        kbdint_auth=False,
        public_key_auth=False,
        host_based_auth=False,
        gss_host=None,
        allow_pty=False,
        x11_forwarding=False,
        agent_forwarding=False,
        allow_scp=False,
        login_timeout=login_timeout,
        keepalive_interval=keepalive_interval,
        keepalive_count_max=keepalive_count_max,
    )
    log.info(
        "gateway listening on %s:%d, host key %s",
        host,
        gateway.port,
        host_key_fingerprint(host_key),
    )
    return gateway, registry


# Host key -------------------------------------------------------------------------------------


def load_or_create_host_key(path: str | os.PathLike[str]) -> asyncssh.SSHKey:
    """The gateway's ed25519 host key, created 0600 on first use so clients can pin it forever.

    Creation is atomic and never replaces a key another process created first (``os.link``
    fails on an existing name), so replicas starting together agree. A key file readable by
    others is refused, as sshd does. ``<path>.pub`` is written alongside for distribution.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="remote-jobqueue-gateway")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        write_private_file(tmp, key.export_private_key("openssh"))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            (path.with_name(path.name + ".pub")).write_text(public_key_text(key) + "\n")
            log.info("created gateway host key %s (%s)", path, host_key_fingerprint(key))
        finally:
            tmp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"host key {path} has mode {mode:o}: it must be 0600 (or 0400)")
    return asyncssh.read_private_key(path)


def public_key_text(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA… comment``: what clients pin (``known_host_key``)."""
    return key.export_public_key("openssh").decode().strip()


def host_key_fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:…``, as OpenSSH prints it, for humans comparing keys."""
    return key.get_fingerprint("sha256")


def known_hosts_line(key: asyncssh.SSHKey, host: str, port: int = 22) -> str:
    """A ``known_hosts`` line for OpenSSH clients reaching the gateway at ``host:port``."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {public_key_text(key)}"


# Command line ---------------------------------------------------------------------------------


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="remote-jobqueue gateway",
        description="SSH gateway: routes each user's tunnels to their own remote Dask clusters.",
    )
    p.add_argument("--listen", default="0.0.0.0:2222", help="host:port (default %(default)s)")
    p.add_argument("--host-key", required=True, help="ed25519 host key, created if missing")
    p.add_argument("--issuer", help="OIDC issuer URL whose access tokens are accepted")
    p.add_argument("--audience", action="append", help="accepted audience (repeatable)")
    p.add_argument("--identity-claim", default="preferred_username")
    p.add_argument(
        "--hub-api-url",
        help="also accept JupyterHub API tokens, checked at this Hub API (…/hub/api)",
    )
    p.add_argument("--hub-token-ttl", type=float, default=60.0, help="cache Hub answers (s)")
    p.add_argument("--print-host-key", action="store_true", help="print the public key and exit")
    p.add_argument("--log-level", default="INFO")
    return p


async def _run(args: argparse.Namespace) -> None:
    validator = TokenValidator(args.issuer, args.audience)
    authenticator: Authenticator = JWTAuthenticator(validator, identity_claim=args.identity_claim)
    if args.hub_api_url:
        from .hubauth import HubTokenAuthenticator

        hub = HubTokenAuthenticator(args.hub_api_url, ttl=args.hub_token_ttl)
        authenticator = ChainAuthenticator(authenticator, hub)
    host, port = parse_host_port(args.listen)
    gateway, _ = await serve(host, port, args.host_key, authenticator)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with gateway:
        await stop.wait()
        log.info("stopping")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m remote_jobqueue.gateway``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.print_host_key:
        print(public_key_text(load_or_create_host_key(args.host_key)))
        return 0
    if not args.issuer or not args.audience:
        parser.error("--issuer and --audience are required to serve")
    asyncio.run(_run(args))
    return 0
