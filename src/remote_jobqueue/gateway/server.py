"""The gateway's SSH server: a rendezvous point that bundles and users both dial *out* to.

Sites sit behind NAT and JupyterLab sits behind the hub, so neither can reach the other; both can
reach the gateway. A bundle's reverse forward becomes an entry of the :class:`~.registry.Registry`
(no socket is bound), and a user's local forward to the same name is spliced in-process onto a
channel opened back to the bundle's connection: only to the user's *own* clusters.

A login lasts as long as its token: the connection is closed when the token expires, unless
the client renews it in-band first (the ``@renew`` control channel) with a fresh token of the
same identity. A bundle must claim its cluster with the cluster's secret (``@claim``) before
it may register the cluster's ports. ``@whoami`` tells a client who it is logged in as.

Everything else SSH can do (shells, exec, subsystems, agent / X11 / UNIX-socket forwarding,
public-key or keyboard-interactive login) is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial

import asyncssh

from .auth import AuthenticationFailed, Authenticator, Identity
from .hostkeys import host_key_fingerprint, load_or_create_host_key
from .limits import AddressLimits, peer_address
from .protocol import (
    ANY_USERNAME,
    AUTH_BANNER_PREFIX,
    AUTH_BANNER_TEMPORARY,
    CLAIM_HOST,
    CLUSTER_ID_RE,
    CONTROL_LINE_MAX,
    RENEW_HOST,
    WHOAMI_HOST,
)
from .redaction import install_log_redaction, loggable_name
from .registry import ClaimRefused, Registry, RegistryFull, ReverseForward

log = logging.getLogger(__name__)

#: Refused control requests (renewals with bad tokens, wrong claims) that end a connection.
CONTROL_REFUSALS_MAX = 5


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


# Control channels: one request line in, one answer line out ------------------------------------


class _ControlSession(asyncssh.SSHTCPSession[bytes]):
    """Reads one line (at most :data:`CONTROL_LINE_MAX` bytes, within ``timeout`` seconds),
    answers it with ``handler``."""

    def __init__(self, handler: Callable[[str], Awaitable[str]], timeout: float = 10.0) -> None:
        self.handler = handler
        self.timeout = timeout
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.buffer = b""
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:  # type: ignore[override]
        self.chan = chan
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._too_slow)

    def _start(self, answer: Awaitable[None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.task = asyncio.ensure_future(answer)

    def _too_slow(self) -> None:
        if self.task is None:
            self._start(self._reply(f"refused: no request within {self.timeout:g} s"))

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.task is not None:
            return
        self.buffer += data
        if b"\n" in self.buffer:
            line = self.buffer.split(b"\n", 1)[0].decode(errors="replace")
            self._start(self._answer(line))
        elif len(self.buffer) > CONTROL_LINE_MAX:
            self._start(self._reply("refused: request too long"))

    def eof_received(self) -> bool:
        if self.task is None:
            self._start(self._reply("refused: empty request"))
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    async def _answer(self, line: str) -> None:
        try:
            answer = await self.handler(line)
        except Exception as err:  # never the request itself: it may hold a secret
            log.error("control request failed: %s", type(err).__name__)
            answer = "refused: internal error"
        await self._reply(answer)

    async def _reply(self, answer: str) -> None:
        if self.chan is not None and not self.chan.is_closing():
            self.chan.write(answer.encode() + b"\n")
            self.chan.close()


# The SSH server ---------------------------------------------------------------------------------


class GatewayServer(asyncssh.SSHServer):
    """One instance per SSH connection: authenticates it, then registers or routes forwards."""

    def __init__(self, authenticator: Authenticator, registry: Registry, gateway: Gateway) -> None:
        self.authenticator = authenticator
        self.registry = registry
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.user: Identity | None = None
        self.peer = "?"
        self.address = "?"  # the peer's host: what limits count by
        self.admitted = False
        self.closed = False
        #: Cluster ids this connection proved to be the bundle of (``@claim``): their digests.
        self.claimed: dict[str, bytes] = {}
        #: One control request at a time; this many refused ones end the connection.
        self._control_busy = False
        self._control_refusals = 0
        self._expiry: asyncio.TimerHandle | None = None

    # connection lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:  # type: ignore[override]
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.address = peer_address(peer)
        if not self.gateway.limits.admit(self.address):
            log.warning("too many unauthenticated connections from %s: refused", self.address)
            conn.abort()
            return
        self.admitted = True
        self.gateway.sessions.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        self.gateway.sessions.discard(self)
        if self.admitted:
            self.gateway.limits.closed(self.address, authenticated=self.user is not None)
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
        if (reason := self.gateway.limits.check_attempt(self.address)) is not None:
            self._refuse(username, reason, True)  # the token is not even looked at
            return False
        try:
            identity = await self.authenticator.authenticate(username, password)
            if username not in (ANY_USERNAME, identity.name):
                raise AuthenticationFailed(
                    f"user name {loggable_name(username)!r} is not the token's identity; "
                    f"use {identity.name!r} or {ANY_USERNAME!r}"
                )
        except AuthenticationFailed as err:
            if not err.temporary:  # an issuer outage is no guess
                self.gateway.limits.failed(self.address)
            self._refuse(username, err.reason, err.temporary)
            return False
        except Exception as err:  # a broken authenticator must not leak the secret or crash
            log.error(
                "authenticator %s raised %s", type(self.authenticator).__name__, type(err).__name__
            )
            self._refuse(username, "internal error while checking the token", True)
            return False
        if self.admitted:
            self.gateway.limits.authenticated(self.address)
        self.user = identity
        self._bound_by(identity)
        log.info(
            "%s (%s) authenticated from %s for %.0f s",
            identity.name,
            identity.subject,
            self.peer,
            identity.remaining(),
        )
        return True

    # the login's lifetime: its token's

    def _bound_by(self, identity: Identity) -> None:
        """Close the connection when ``identity``'s login ends, unless renewed before."""
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, identity.remaining())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        log.warning(
            "login of %s from %s expired (token not renewed): connection closed",
            self.user,
            self.peer,
        )
        if self.conn is not None:
            self.conn.disconnect(
                asyncssh.DISC_BY_APPLICATION, "your token expired: connect with a fresh one"
            )

    async def _control(self, handler: Callable[[str], Awaitable[str]], line: str) -> str:
        """One control request at a time per connection, none after the connection is gone;
        refusals count as failed logins of the address (a renewal is a login), and after
        :data:`CONTROL_REFUSALS_MAX` of them the connection ends."""
        if self.closed or self.user is None:
            return "refused: connection closed"
        if self._control_busy:
            return "refused: one control request at a time"
        if (reason := self.gateway.limits.check_attempt(self.address)) is not None:
            return f"refused (temporary): {reason}"
        self._control_busy = True
        try:
            answer = await handler(line)
        finally:
            self._control_busy = False
        if answer.startswith("refused") and not answer.startswith("refused (temporary)"):
            self.gateway.limits.failed(self.address)
            self._control_refusals += 1
            if self._control_refusals >= CONTROL_REFUSALS_MAX and self.conn is not None:
                log.warning("%s from %s: too many refused control requests", self.user, self.peer)
                asyncio.get_running_loop().call_soon(
                    self.conn.disconnect, asyncssh.DISC_BY_APPLICATION, "too many refusals"
                )
        return answer

    async def _renew(self, token: str) -> str:
        """``@renew``: extend this login with a fresh token of the same identity."""
        assert self.user is not None
        try:
            identity = await self.authenticator.authenticate(ANY_USERNAME, token.strip())
        except AuthenticationFailed as err:
            log.warning("renewal by %s from %s refused: %s", self.user, self.peer, err.reason)
            return f"refused{' (temporary)' if err.temporary else ''}: {err.reason}"
        if self.closed:
            return "refused: connection closed"
        if identity.key != self.user.key:
            log.warning(
                "renewal by %s from %s refused: the token is %s's", self.user, self.peer, identity
            )
            return f"refused: the token is {identity.name}'s, not {self.user.name}'s"
        self.user = identity
        self._bound_by(identity)
        log.info(
            "login of %s from %s renewed for %.0f s", identity, self.peer, identity.remaining()
        )
        return f"ok {identity.expires_at:.0f}"

    async def _claim(self, line: str) -> str:
        """``@claim``: "<cluster id> <secret>" proves this connection is the cluster's bundle."""
        assert self.user is not None
        cluster_id, _, secret = line.strip().partition(" ")
        if not CLUSTER_ID_RE.match(cluster_id) or len(secret) < 16:
            return "refused: want '<cluster id> <secret of at least 16 characters>'"
        try:
            self.claimed[cluster_id] = self.registry.claim(self.user, cluster_id, secret)
        except (ClaimRefused, RegistryFull) as err:
            log.warning(
                "claim of %s by %s from %s refused: %s", cluster_id, self.user, self.peer, err
            )
            return f"refused: {err}"
        return "ok"

    async def _whoami(self, line: str) -> str:
        """``@whoami``: the identity this connection logged in as (`remote-jobqueue whoami`)."""
        assert self.user is not None
        user = self.user
        identity = {
            "issuer": user.issuer,
            "subject": user.subject,
            "name": user.name,
            "expires_at": user.expires_at,
        }
        return "ok " + json.dumps(identity)

    def _refuse(self, username: str, reason: str, temporary: bool) -> None:
        log.warning(
            "authentication of %s from %s failed: %s", loggable_name(username), self.peer, reason
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
        if not self.registry.holds(self.user, listen_host, self.claimed.get(listen_host)):
            log.warning(
                "%s from %s asked to register %s port %d without claiming it: refused",
                self.user,
                self.peer,
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
        controls = {RENEW_HOST: self._renew, CLAIM_HOST: self._claim, WHOAMI_HOST: self._whoami}
        if self.user is not None and dest_host in controls:
            handler = controls[dest_host]
            return _ControlSession(partial(self._control, handler))  # type: ignore[return-value]
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

    def __init__(self, registry: Registry, limits: AddressLimits | None = None) -> None:
        self.registry = registry
        self.limits = AddressLimits() if limits is None else limits
        self.acceptor: asyncssh.SSHAcceptor | None = None
        self.sessions: set[GatewayServer] = set()

    @property
    def port(self) -> int:
        assert self.acceptor is not None
        return self.acceptor.get_port()

    def disconnect(self, user: str | Identity | None = None) -> int:
        """Drop every connection (of ``user`` only, if given: an identity, or a name as in
        tests); returns how many."""

        def matches(session: GatewayServer) -> bool:
            if user is None:
                return True
            if session.user is None:
                return False
            if isinstance(user, Identity):
                return session.user.key == user.key
            return session.user.name == user

        victims = [s for s in self.sessions if matches(s)]
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


#: What asyncssh would otherwise offer, turned off: the gateway logs in only with a password (the
#: bearer token) and only forwards TCP, so no other login method, no terminal, X11, agent or SCP.
#: (:class:`GatewayServer` refuses other logins and every session again, per connection.)
_REFUSED_SSH_FEATURES: dict[str, bool | None] = {
    "kbdint_auth": False,
    "public_key_auth": False,
    "host_based_auth": False,
    "gss_host": None,
    "allow_pty": False,
    "x11_forwarding": False,
    "agent_forwarding": False,
    "allow_scp": False,
}


async def serve(
    host: str,
    port: int,
    host_key_path: str | os.PathLike[str],
    authenticator: Authenticator,
    *,
    registry: Registry | None = None,
    limits: AddressLimits | None = None,
    login_timeout: float = 30.0,
    keepalive_interval: float = 30.0,
    keepalive_count_max: int = 3,
) -> tuple[Gateway, Registry]:
    """Start the gateway on ``host:port`` (0 picks a port: see ``Gateway.port``).

    Keepalives make the gateway notice bundles whose NAT silently dropped them, so their
    registrations go away instead of black-holing users. ``limits`` bounds pending and failed
    logins per client address (:class:`~.limits.AddressLimits`' defaults if not given).
    """
    install_log_redaction()
    registry = Registry() if registry is None else registry
    gateway = Gateway(registry, limits)
    host_key = load_or_create_host_key(host_key_path)
    gateway.acceptor = await asyncssh.listen(
        host,
        port,
        server_factory=lambda: GatewayServer(authenticator, registry, gateway),
        server_host_keys=[host_key],
        password_auth=True,
        **_REFUSED_SSH_FEATURES,
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
