"""The client side of the gateway: a self-healing SSH connection, and the user's tunnel on it.

:class:`GatewayLink` is shared with the bundle's :class:`~.forwarder.ReverseForwarder`: it pins
the gateway's host key, logs in with the bearer token (re-read on every connect, so a refreshed
token is picked up), and reconnects with backoff when the connection drops. It tells failures
apart, because the right reaction differs: an unreachable gateway is retried; a refused token is
not retried until the token changes (hammering a gateway with a known-bad token helps nobody);
a wrong host key is a possible attack and is never trusted. The gateway ends a login when its
token expires; the link renews it in-band (``@renew``) with the current token a little before.

:class:`Tunnel` opens one local port per cluster service on 127.0.0.1 and forwards each accepted
socket over whatever SSH connection is current, so the local ports survive reconnects. The
ports take connections of our own uid only (see `remote_jobqueue.localpeer`): the tunnel logs
in as us, and the loopback is shared with every user of the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from typing import Any, Self, TypedDict

import asyncssh

from ..localpeer import own_user_only
from ..tokens import discover_bearer_token, redact
from .hostkeys import HostKeySpec, load_host_keys
from .protocol import (
    ANY_USERNAME,
    AUTH_BANNER_PREFIX,
    AUTH_BANNER_TEMPORARY,
    CLAIM_HOST,
    RENEW_HOST,
    WHOAMI_HOST,
    check_cluster_id,
    parse_host_port,
)
from .redaction import install_log_redaction

log = logging.getLogger(__name__)

#: Returns the current bearer token (or ``None`` if there is none); may be a coroutine function.
TokenSource = Callable[[], str | Awaitable[str | None] | None]

_CHUNK = 256 * 1024


class TunnelError(Exception):
    """Base of gateway connection problems."""


class TunnelAuthError(TunnelError):
    """The gateway refused the token; ``reason`` is the gateway's own explanation if it sent one.

    ``temporary`` is set when the gateway could not check the token (issuer down): the same
    token may work later.
    """

    def __init__(self, reason: str, *, temporary: bool = False) -> None:
        super().__init__(f"gateway refused the token: {reason}")
        self.reason = reason
        self.temporary = temporary


class TunnelUnreachable(TunnelError):
    """The gateway could not be reached (network, DNS, timeout, connection lost)."""


class TunnelHostKeyError(TunnelError):
    """The gateway presented a host key other than the pinned one: never trusted."""


# Helpers --------------------------------------------------------------------------------------


def default_token_source() -> str | None:
    """WLCG bearer-token discovery, redone on each call so refreshed files are seen."""
    return discover_bearer_token()


@dataclass
class Backoff:
    """Exponential backoff with jitter, so many clients of a restarted gateway spread out."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    _next: float = field(default=0.0, init=False)

    def reset(self) -> None:
        self._next = 0.0

    def exhaust(self) -> None:
        """Jump to the longest delay (for failures that will not go away quickly)."""
        self._next = self.maximum

    def next(self) -> float:
        base = self.initial if self._next == 0.0 else self._next
        self._next = min(base * self.factor, self.maximum)
        return base * (1 + random.uniform(-self.jitter, self.jitter))


class _GatewayClient(asyncssh.SSHClient):
    """Keeps the auth banners: SSH's only way for a server to say *why* it refused."""

    def __init__(self) -> None:
        self.banners: list[str] = []

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banners.append(msg)


def _auth_error(banners: Iterable[str]) -> TunnelAuthError:
    for msg in reversed(list(banners)):
        if msg.startswith(AUTH_BANNER_PREFIX):
            rest = msg[len(AUTH_BANNER_PREFIX) :].strip()
            temporary = rest.startswith(AUTH_BANNER_TEMPORARY)
            rest = rest.removeprefix(AUTH_BANNER_TEMPORARY).strip().removeprefix(":").strip()
            return TunnelAuthError(rest or "no reason given", temporary=temporary)
    return TunnelAuthError("permission denied")


def _preferred_ciphers() -> list[str]:
    """AES-GCM first: with AES instructions it moves about twice what ChaCha20 does (measured
    400 vs 200 MB/s with asyncssh here), and every byte to or from a cluster is encrypted twice
    (client to gateway, gateway to bundle). Anything else the gateway offers stays acceptable."""
    from asyncssh.encryption import get_default_encryption_algs

    fast = ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"]
    rest = [alg.decode() for alg in get_default_encryption_algs()]
    return fast + [alg for alg in rest if alg not in fast]


async def connect_gateway(
    gateway: str,
    host_keys: Sequence[asyncssh.SSHKey],
    token: str,
    *,
    username: str = ANY_USERNAME,
    keepalive_interval: float = 15.0,
    keepalive_count_max: int = 3,
) -> asyncssh.SSHClientConnection:
    """One authenticated connection to the gateway, or a :class:`TunnelError` subclass.

    Nothing of the user's SSH setup is used (config, agent, keys, known_hosts): the token is the
    only credential and the pinned key the only trust, whatever ``~/.ssh`` holds.
    """
    install_log_redaction()
    host, port = parse_host_port(gateway)
    clients: list[_GatewayClient] = []

    def factory() -> _GatewayClient:
        clients.append(_GatewayClient())
        return clients[-1]

    try:
        conn, _ = await asyncssh.create_connection(
            factory,
            host,
            port,
            username=username,
            password=token,
            known_hosts=(list(host_keys), [], []),
            client_keys=None,
            agent_path=None,
            gss_host=None,
            kbdint_auth=False,
            preferred_auth="password",
            encryption_algs=_preferred_ciphers(),
            config=[],
            keepalive_interval=keepalive_interval,
            keepalive_count_max=keepalive_count_max,
        )
    except asyncssh.PermissionDenied:
        raise _auth_error(clients[-1].banners if clients else []) from None
    except asyncssh.HostKeyNotVerifiable as err:
        raise TunnelHostKeyError(
            f"gateway {gateway} presented a host key that is not the pinned one ({err.reason})"
        ) from None
    except (OSError, asyncssh.Error) as err:
        raise TunnelUnreachable(f"cannot reach gateway {gateway}: {err}") from err
    return conn


async def _pipe(reader: asyncio.StreamReader | asyncssh.SSHReader[bytes], writer: object) -> bool:
    """Copy until EOF (then pass the EOF on); False if either side broke."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)  # type: ignore[attr-defined]
            await writer.drain()  # type: ignore[attr-defined]
        if writer.can_write_eof():  # type: ignore[attr-defined]
            writer.write_eof()  # type: ignore[attr-defined]
    except (OSError, asyncssh.Error):
        return False
    return True


async def splice(
    local_reader: asyncio.StreamReader,
    local_writer: asyncio.StreamWriter,
    remote_reader: asyncssh.SSHReader[bytes],
    remote_writer: asyncssh.SSHWriter[bytes],
) -> None:
    """Join a socket and an SSH channel both ways until both directions end (half-close kept)."""
    up = asyncio.create_task(_pipe(local_reader, remote_writer))
    down = asyncio.create_task(_pipe(remote_reader, local_writer))
    pending: set[asyncio.Task[bool]] = {up, down}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not all(t.result() for t in done):
                break
            if down in done and remote_writer.channel.is_closing():
                break  # the far end closed the channel: nothing more can go up
    finally:
        for task in (up, down):
            task.cancel()
        remote_writer.close()
        local_writer.close()


class ControlUnsupported(TunnelError):
    """The gateway has no such control channel (an older gateway)."""


async def control_request(
    conn: asyncssh.SSHClientConnection, host: str, line: str, timeout: float = 15.0
) -> str:
    """One request on a gateway control channel (see `.protocol`); the answer line.

    Raises :class:`TunnelAuthError` with the gateway's reason if the answer is a refusal,
    :class:`TunnelUnreachable` if no answer comes within ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await conn.open_connection(host, 0)
            writer.write(line.encode() + b"\n")
            answer = (await reader.readline()).decode().strip()
            writer.close()
    except TimeoutError:
        raise TunnelUnreachable(f"no answer on gateway control channel {host}") from None
    except asyncssh.ChannelOpenError as err:
        if err.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
            raise ControlUnsupported(f"the gateway has no {host} channel: {err.reason}") from None
        raise TunnelUnreachable(f"gateway control channel {host} failed: {err}") from None
    except (asyncssh.Error, OSError) as err:
        raise TunnelUnreachable(f"gateway control channel {host} failed: {err}") from None
    if not answer.startswith("ok"):
        reason = answer.removeprefix("refused").strip()
        temporary = reason.startswith(AUTH_BANNER_TEMPORARY)
        reason = reason.removeprefix(AUTH_BANNER_TEMPORARY).strip().removeprefix(":").strip()
        raise TunnelAuthError(reason or "no answer", temporary=temporary)
    return answer


async def renew_login(conn: asyncssh.SSHClientConnection, token: str) -> float:
    """Extend the connection's login with ``token``; returns its new end (Unix time)."""
    answer = await control_request(conn, RENEW_HOST, token)
    return float(answer.split()[1])


async def whoami(conn: asyncssh.SSHClientConnection) -> dict[str, Any]:
    """Who the gateway takes this connection for: issuer, subject, name, expires_at."""
    answer = await control_request(conn, WHOAMI_HOST, "whoami")
    try:
        identity = json.loads(answer.removeprefix("ok").strip())
    except ValueError:
        raise TunnelError("the gateway's @whoami answer is no JSON") from None
    if not isinstance(identity, dict):
        raise TunnelError("the gateway's @whoami answer is no identity")
    return identity


async def ask_whoami(
    gateway: str, known_host_key: HostKeySpec, token: str, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Log in to ``gateway`` with ``token`` once, only to ask who we are (then leave)."""
    try:
        async with asyncio.timeout(timeout):
            conn = await connect_gateway(gateway, load_host_keys(known_host_key), token)
            try:
                return await whoami(conn)
            finally:
                conn.close()
                await conn.wait_closed()
    except TimeoutError:
        raise TunnelUnreachable(f"no answer from gateway {gateway} within {timeout:g}s") from None


# The self-healing link ------------------------------------------------------------------------


class LinkOptions(TypedDict, total=False):
    """Connection tuning shared by :class:`Tunnel` and the bundle's forwarder: the keyword-only
    fields of :class:`GatewayLink`, as a dict to pass around."""

    username: str
    connect_timeout: float
    keepalive_interval: float
    keepalive_count_max: int
    backoff_initial: float
    backoff_max: float


@dataclass(eq=False, repr=False)
class GatewayLink:
    """One authenticated SSH connection to the gateway on behalf of one cluster, replaced
    whenever it drops.

    A dataclass, so that subclasses declare only what they add: the generated ``__init__``
    takes these fields, then the subclass's, then every keyword-only one.

    ``connected`` is set while a connection is up (and, for subclasses, fully set up);
    ``state`` and ``last_error`` are for logging and status displays; ``connect_count`` counts
    successful connections (1 after :meth:`start`).
    """

    gateway: str
    #: The gateway's pinned host key (see :func:`.hostkeys.load_host_keys`).
    known_host_key: HostKeySpec
    #: ``None``: WLCG bearer-token discovery.
    token_source: TokenSource | None
    #: The cluster's name at the gateway (with the user's identity, the registry's key).
    cluster_id: str
    _: KW_ONLY
    username: str = ANY_USERNAME
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: Renew the login this long (at most) before the gateway would end it.
    renew_margin: float = 60.0

    def __post_init__(self) -> None:
        self.host_keys = load_host_keys(self.known_host_key)
        self.token_source = self.token_source or default_token_source
        self.cluster_id = check_cluster_id(self.cluster_id)
        self.connected = asyncio.Event()
        self.state = "idle"
        self.last_error: TunnelError | None = None
        self.connect_count = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._rejected: tuple[str, TunnelAuthError] | None = None
        self._renewer: asyncio.Task[None] | None = None
        # The gateway takes one control request per connection at a time.
        self._control_lock = asyncio.Lock()
        #: When the gateway ends the current login unless renewed (Unix time), once known.
        self.login_expires: float | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.cluster_id} via {self.gateway} {self.state}>"

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        """The current SSH connection, if any (it may be replaced at any time)."""
        return self._conn

    def _backoff(self) -> Backoff:
        return Backoff(self.backoff_initial, self.backoff_max)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.debug("%r: %s -> %s", self, self.state, state)
        self.state = state

    # hooks for subclasses

    async def _on_connect(self, conn: asyncssh.SSHClientConnection) -> None:
        """Set up what the link is for on a fresh connection (before ``connected`` is set)."""

    async def _claim(self, conn: asyncssh.SSHClientConnection, secret: str) -> None:
        """Claim our cluster's name at the gateway with its secret (see `.registry`)."""
        try:
            await control_request(conn, CLAIM_HOST, f"{self.cluster_id} {secret}")
        except TunnelAuthError as err:
            raise TunnelError(
                f"gateway refused our claim of {self.cluster_id}: {err.reason}"
            ) from None

    # connecting

    async def _read_token(self) -> str:
        try:
            token = self.token_source()
            if inspect.isawaitable(token):
                token = await token
        except Exception as err:
            raise TunnelAuthError(f"cannot read the bearer token: {err}") from err
        if not token or not token.strip():
            raise TunnelAuthError("no bearer token found")
        return token.strip()

    async def _connect_once(self) -> None:
        self._set_state("connecting")
        token = await self._read_token()
        digest = hashlib.sha256(token.encode()).hexdigest()
        if self._rejected is not None and self._rejected[0] == digest:
            # the gateway refused this very token: do not send it again, wait for a new one
            raise TunnelAuthError(self._rejected[1].reason)
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await connect_gateway(
                    self.gateway,
                    self.host_keys,
                    token,
                    username=self.username,
                    keepalive_interval=self.keepalive_interval,
                    keepalive_count_max=self.keepalive_count_max,
                )
        except TimeoutError:
            raise TunnelUnreachable(
                f"no answer from gateway {self.gateway} within {self.connect_timeout:g}s"
            ) from None
        except TunnelAuthError as err:
            if not err.temporary:
                self._rejected = (digest, err)
            raise
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._on_connect(conn)
        except BaseException as err:
            conn.abort()
            if isinstance(err, TimeoutError):
                raise TunnelUnreachable(f"gateway {self.gateway} stopped answering") from None
            raise
        self._conn = conn
        self._rejected = None
        self.last_error = None
        self.login_expires = None
        if self._renewer is not None:
            self._renewer.cancel()
        self._renewer = asyncio.create_task(self._keep_login(conn), name=f"renew {self!r}")
        self.connect_count += 1
        self._set_state("connected")
        self.connected.set()
        log.info("%r: connected (token %s)", self, redact(token))

    async def renew(self, token: str) -> float:
        """Renew the current login with ``token`` (the gateway checks it as at login and that it
        is the same identity's); returns the login's new end, or raises :class:`TunnelError`."""
        conn = self._conn
        if conn is None or conn.is_closed():
            raise TunnelUnreachable(f"{self!r} has no connection to renew")
        async with self._control_lock:
            self.login_expires = await renew_login(conn, token.strip())
        return self.login_expires

    async def _keep_login(self, conn: asyncssh.SSHClientConnection) -> None:
        """Renew the login with the current token ahead of its end, for as long as ``conn``
        lives; the first renewal at once, which also tells us when the login ends."""
        delay, failures = 0.0, 0
        while not conn.is_closed():
            await asyncio.sleep(delay)
            try:
                token = await self._read_token()
                async with self._control_lock:
                    self.login_expires = await renew_login(conn, token)
                remaining = self.login_expires - time.time()
                delay = max(1.0, remaining - min(self.renew_margin, remaining / 5))
                failures = 0
            except ControlUnsupported as err:
                log.warning("%r: %s; the login ends with its token", self, err)
                return
            except TunnelError as err:
                if conn.is_closed():
                    return
                failures += 1
                remaining = (self.login_expires or 0) - time.time()
                backoff = min(60.0, 5.0 * 2 ** (failures - 1))
                delay = min(backoff, remaining / 4) if remaining > 20 else backoff
                delay = max(delay, 5.0)
                log.warning("%r: renewing the login failed (%s); again in %.0f s", self, err, delay)
            except Exception:
                log.exception("%r: renewing the login failed", self)
                delay = 30.0

    async def start(self, timeout: float = 30.0) -> None:
        """Connect, retrying an unreachable gateway for up to ``timeout`` seconds, then keep the
        connection up in the background.

        Raises :class:`TunnelAuthError` or :class:`TunnelHostKeyError` at once, and
        :class:`TunnelUnreachable` when ``timeout`` runs out.
        """
        if self._task is not None:
            raise RuntimeError(f"{self!r} already started")
        self._closing = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        backoff = self._backoff()
        while True:
            try:
                await self._connect_once()
                break
            except (TunnelUnreachable, TunnelAuthError) as err:
                self.last_error = err
                retry = isinstance(err, TunnelUnreachable) or err.temporary
                remaining = deadline - loop.time()
                if not retry or remaining <= 0:
                    self._set_state("failed")
                    if isinstance(err, TunnelUnreachable):
                        raise TunnelUnreachable(
                            f"gateway {self.gateway} not reachable within {timeout:g}s: {err}"
                        ) from err
                    raise
                log.info("%r: %s; retrying", self, err)
                self._set_state("waiting")
                await asyncio.sleep(min(backoff.next(), remaining))
            except TunnelError as err:
                self.last_error = err
                self._set_state("failed")
                raise
        self._task = asyncio.create_task(self._supervise(), name=f"gateway-link {self.gateway}")

    async def _supervise(self) -> None:
        backoff = self._backoff()
        logged = ""
        while not self._closing:
            conn = self._conn
            if conn is not None:
                await conn.wait_closed()
                self._conn = None
                self.connected.clear()
                if self._closing:
                    break
                log.warning("%r: connection to the gateway lost; reconnecting", self)
                backoff.reset()
                logged = ""
            self._set_state("waiting")
            await asyncio.sleep(backoff.next())
            try:
                await self._connect_once()
                backoff.reset()
            except TunnelError as err:
                self.last_error = err
                if isinstance(err, TunnelAuthError | TunnelHostKeyError) and not getattr(
                    err, "temporary", False
                ):
                    backoff.exhaust()  # will not heal by itself soon: retry slowly
                if str(err) != logged:  # say it once, not every retry
                    log.warning("%r: %s", self, err)
                    logged = str(err)
            except Exception:
                log.exception("%r: unexpected error while reconnecting", self)

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._closing = True
        tasks = [t for t in (self._task, self._renewer) if t is not None]
        self._task = self._renewer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()
        self.connected.clear()
        self._set_state("closed")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# The user's tunnel ----------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Tunnel(GatewayLink):
    """Local ports on ``bind_host`` for the services of one cluster, through the gateway.

    Each accepted socket gets its own SSH channel to ``(cluster_id, port)`` on the current
    connection; a socket accepted while the link is down waits up to ``connect_wait`` seconds
    for it to come back. The local ports never change for the life of the tunnel.
    """

    #: The cluster's service ports to offer locally (scheduler and dashboard by default).
    services: Iterable[int] = (8786, 8787)
    _: KW_ONLY
    bind_host: str = "127.0.0.1"
    connect_wait: float = 10.0
    #: With the cluster's secret, the tunnel claims the cluster's name on every connect: the
    #: client does so before it submits the scheduler job, so that nobody can take the name
    #: between the job showing in the queue and the bundle dialling in.
    claim_secret: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.services = tuple(self.services)
        self._servers: dict[int, asyncio.Server] = {}
        self._local_ports: dict[int, int] = {}
        self._handlers: set[asyncio.Task[None]] = set()

    def local_port(self, port: int) -> int:
        """The local port standing for the cluster's service ``port``."""
        try:
            return self._local_ports[port]
        except KeyError:
            raise KeyError(f"{self!r} has no local port for service {port} (started?)") from None

    def local_address(self, port: int) -> str:
        """``host:port`` to reach the cluster's service ``port`` from here."""
        return f"{self.bind_host}:{self.local_port(port)}"

    async def _on_connect(self, conn: asyncssh.SSHClientConnection) -> None:
        if self.claim_secret:
            await self._claim(conn, self.claim_secret)

    async def start(self, timeout: float = 30.0) -> None:
        """Open the local ports, then connect (see :meth:`GatewayLink.start`)."""
        if self._task is not None or self._servers:
            raise RuntimeError(f"{self!r} already started")
        for port in self.services:
            handler = own_user_only(partial(self._handle, port), f"{self!r} port {port}")
            server = await asyncio.start_server(handler, self.bind_host, 0)
            self._servers[port] = server
            self._local_ports[port] = server.sockets[0].getsockname()[1]
        try:
            await super().start(timeout)
        except BaseException:
            await self._close_local()
            raise
        log.info(
            "%r: %s", self, ", ".join(f"{p} -> {self.local_address(p)}" for p in self.services)
        )

    async def close(self) -> None:
        await self._close_local()
        await super().close()

    async def _close_local(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    async def _current_connection(self, deadline: float) -> asyncssh.SSHClientConnection | None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            if self.connected.is_set():  # dropped a moment ago; the supervisor will notice
                await asyncio.sleep(0.01)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.connected.wait(), remaining)
        return None

    async def open(self, port: int) -> tuple[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]]:
        """A channel of our own to the cluster's ``port`` (not through a local port)."""
        return await self._open(port)

    async def _open(self, port: int) -> tuple[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]]:
        """A channel to the cluster's ``port``, retried until ``connect_wait`` runs out.

        Refusals are retried too: the cluster may not be registered *yet* (its bundle is still
        starting) or *again* (its bundle is reconnecting), and the gateway rightly does not say
        which, so a short wait is the only way to ride through either.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_wait
        backoff = Backoff(initial=0.05, maximum=0.5)
        while True:
            conn = await self._current_connection(deadline)
            if conn is None:
                raise TunnelUnreachable(
                    f"no connection to gateway {self.gateway} within {self.connect_wait:g}s"
                )
            try:
                return await conn.open_connection(self.cluster_id, port)
            except (asyncssh.Error, OSError) as err:
                if getattr(err, "code", None) != asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                    # maybe the connection is dying: asyncssh marks it closed a moment later
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(conn.wait_closed(), 0.1)
                    if conn.is_closed():
                        continue
                delay = backoff.next()
                if loop.time() + delay > deadline:
                    reason = getattr(err, "reason", None) or str(err)
                    raise TunnelError(f"{self.cluster_id} port {port}: {reason}") from err
                log.debug("%r: %s port %d refused (%s); retrying", self, self.cluster_id, port, err)
            await asyncio.sleep(delay)

    async def _handle(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                remote_reader, remote_writer = await self._open(port)
            except TunnelError as err:
                log.warning("%r: local connection refused: %s", self, err)
                return
            await splice(reader, writer, remote_reader, remote_writer)
        except asyncio.CancelledError:
            # The tunnel is closing. This task is asyncio's server callback: re-raising would
            # only print a traceback ("Exception in callback ...") for an orderly close.
            return
        finally:
            self._handlers.discard(task)
            writer.close()
