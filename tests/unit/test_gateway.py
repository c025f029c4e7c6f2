"""The SSH gateway, the bundle's reverse forwarder and the user's tunnel, on loopback.

A fake authenticator maps secrets to users; tiny TCP servers stand in for Dask schedulers. Each
one greets with its owner's name, then echoes bytes until EOF, so a test can tell *whose*
cluster answered and that every byte made it through both SSH hops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import psutil
import pytest
import pytest_asyncio

from remote_jobqueue.gateway import (
    AuthenticationFailed,
    Backoff,
    ClaimRefused,
    Gateway,
    Identity,
    Registry,
    RegistryFull,
    ReverseForwarder,
    Tunnel,
    TunnelAuthError,
    TunnelHostKeyError,
    TunnelUnreachable,
    connect_gateway,
    host_key_fingerprint,
    known_hosts_line,
    load_host_keys,
    load_or_create_host_key,
    main,
    public_key_text,
    serve,
)

from ..waiting import async_wait_until

pytestmark = pytest.mark.timeout(20)

SECRETS = {"tok-alice": "alice", "tok-bob": "bob"}
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "connect_timeout": 5.0}


class FakeAuthenticator:
    """Secrets are user names in disguise; counts calls to show clients do not hammer it.

    A login lasts ``lifetime`` seconds, or what ``lifetimes`` says for that secret."""

    def __init__(self, secrets: dict[str, str], lifetime: float = 3600.0) -> None:
        self.secrets = secrets
        self.seen: list[str] = []
        self.lifetime = lifetime
        self.lifetimes: dict[str, float] = {}

    async def authenticate(self, username: str, secret: str) -> Identity:
        self.seen.append(secret)
        try:
            name = self.secrets[secret]
        except KeyError:
            raise AuthenticationFailed("unknown token") from None
        lifetime = self.lifetimes.get(secret, self.lifetime)
        return Identity("https://issuer.test", f"sub-{name}", name, time.time() + lifetime)


def identity(name: str) -> Identity:
    return Identity("https://issuer.test", f"sub-{name}", name, time.time() + 3600)


@dataclass
class Env:
    gateway: Gateway
    registry: Registry
    authenticator: FakeAuthenticator
    key_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    @property
    def host_key(self) -> str:
        return public_key_text(load_or_create_host_key(self.key_path))

    def forwarder(
        self, token: str, services: dict[int, tuple[str, int]], cluster_id: str = "rjq-abc"
    ) -> ReverseForwarder:
        return ReverseForwarder(
            self.address,
            self.host_key,
            lambda: token,
            cluster_id,
            services,
            f"secret-of-{cluster_id}-0123456789",
            **FAST,
        )

    def tunnel(
        self,
        token: str | Callable[[], str],
        cluster_id: str = "rjq-abc",
        services: tuple[int, ...] = (8786,),
        connect_wait: float = 3.0,
    ) -> Tunnel:
        source = token if callable(token) else lambda: token
        return Tunnel(
            self.address,
            self.host_key,
            source,
            cluster_id,
            services,
            connect_wait=connect_wait,
            **FAST,
        )


@pytest_asyncio.fixture(loop_scope="function")
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    key_path = tmp_path / "gateway" / "host_key"
    authenticator = FakeAuthenticator(SECRETS)
    gateway, registry = await serve("127.0.0.1", 0, key_path, authenticator)
    async with gateway:
        yield Env(gateway, registry, authenticator, key_path)


@asynccontextmanager
async def scheduler(owner: str) -> AsyncIterator[tuple[str, int]]:
    """A stand-in for a Dask scheduler: greets with ``owner``, echoes until EOF, says bye."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(owner.encode() + b"\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"bye\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]


async def greeting(address: str) -> bytes:
    """Connect to a local tunnel port; the owner's name, or b"" if the connection was refused."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        return (await asyncio.wait_for(reader.readline(), 5)).strip()
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def echo(address: str, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and return everything after the greeting."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.read(-1), 10)
    await sender
    writer.close()
    return received


@asynccontextmanager
async def running(*links: ReverseForwarder | Tunnel) -> AsyncIterator[None]:
    try:
        for link in links:
            await link.start(timeout=5)
        yield
    finally:
        for link in links:
            await link.close()


def listening_ports() -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


@contextmanager
def closed_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


# Routing: a user reaches their own clusters, and only those ------------------------------------


async def test_owner_reaches_own_cluster_through_tunnel(env: Env) -> None:
    async with scheduler("alice") as sched, scheduler("alice-dashboard") as dash:
        fwd = env.forwarder("tok-alice", {8786: sched, 8787: dash})
        tunnel = env.tunnel("tok-alice", services=(8786, 8787))
        async with running(fwd, tunnel):
            assert fwd.connected.is_set() and tunnel.connected.is_set()
            assert tunnel.local_address(8786).startswith("127.0.0.1:")
            assert await greeting(tunnel.local_address(8786)) == b"alice"
            assert await greeting(tunnel.local_address(8787)) == b"alice-dashboard"
            assert [(r.cluster_id, r.port) for r in env.registry.list(identity("alice"))] == [
                ("rjq-abc", 8786),
                ("rjq-abc", 8787),
            ]


async def test_bytes_survive_both_hops_with_flow_control_and_half_close(env: Env) -> None:
    payload = os.urandom(4 * 1024 * 1024)
    async with scheduler("alice") as sched:
        fwd, tunnel = env.forwarder("tok-alice", {8786: sched}), env.tunnel("tok-alice")
        async with running(fwd, tunnel):
            received = await echo(tunnel.local_address(8786), payload)
    assert received.endswith(b"bye\n")
    assert hashlib.sha256(received[:-4]).digest() == hashlib.sha256(payload).digest()


def refusal(cluster_id: str, port: int) -> str:
    """The gateway's reason for refusing a channel to a cluster the user has not registered."""
    return f"no cluster {cluster_id!r} with port {port} registered for you"


async def test_another_user_cannot_reach_the_cluster(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="remote_jobqueue.gateway.tunnel")
    async with scheduler("alice") as sched, running(env.forwarder("tok-alice", {8786: sched})):
        # through a tunnel: bob's local connection is closed without a byte of alice's
        # (after connect_wait: for all bob's tunnel knows, his cluster may be starting),
        # and it was the gateway that refused it, not some broken link
        async with running(bob := env.tunnel("tok-bob", connect_wait=0.3)):
            assert await greeting(bob.local_address(8786)) == b""
        why = f"local connection refused: rjq-abc port 8786: {refusal('rjq-abc', 8786)}"
        assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
            f"{bob!r}: {why}"
        ]

        # on the wire: the gateway refuses the channel, exactly as for a cluster that
        # does not exist, so bob cannot even learn that alice's cluster is there
        conn = await connect_gateway(env.address, load_host_keys(env.host_key), "tok-bob")
        async with conn:
            with pytest.raises(asyncssh.ChannelOpenError) as theirs:
                await conn.open_connection("rjq-abc", 8786)
            with pytest.raises(asyncssh.ChannelOpenError) as missing:
                await conn.open_connection("rjq-nope", 8786)
    prohibited = asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert (theirs.value.code, theirs.value.reason) == (prohibited, refusal("rjq-abc", 8786))
    assert (missing.value.code, missing.value.reason) == (prohibited, refusal("rjq-nope", 8786))


async def test_cluster_names_are_per_user(env: Env) -> None:
    async with scheduler("alice") as a_sched, scheduler("bob") as b_sched:
        fwd_a = env.forwarder("tok-alice", {8786: a_sched})
        fwd_b = env.forwarder("tok-bob", {8786: b_sched})  # same cluster id: no clash
        tun_a, tun_b = env.tunnel("tok-alice"), env.tunnel("tok-bob")
        async with running(fwd_a, fwd_b, tun_a, tun_b):
            assert await greeting(tun_a.local_address(8786)) == b"alice"
            assert await greeting(tun_b.local_address(8786)) == b"bob"
            assert (
                len(env.registry.list(identity("alice")))
                == len(env.registry.list(identity("bob")))
                == 1
            )
            assert env.registry.list(identity("mallory")) == []


async def test_unregistered_port_of_own_cluster_is_refused(env: Env) -> None:
    async with scheduler("alice") as sched, running(env.forwarder("tok-alice", {8786: sched})):
        conn = await connect_gateway(env.address, load_host_keys(env.host_key), "tok-alice")
        async with conn:
            with pytest.raises(asyncssh.ChannelOpenError) as err:
                await conn.open_connection("rjq-abc", 22)
    assert err.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert err.value.reason == refusal("rjq-abc", 22)


async def test_scheduler_down_refuses_the_channel(env: Env) -> None:
    with closed_port() as port:
        async with running(env.forwarder("tok-alice", {8786: ("127.0.0.1", port)})):
            conn = await connect_gateway(env.address, load_host_keys(env.host_key), "tok-alice")
            async with conn:
                with pytest.raises(asyncssh.ChannelOpenError) as err:
                    await conn.open_connection("rjq-abc", 8786)
    assert err.value.code == asyncssh.OPEN_CONNECT_FAILED
    assert err.value.reason.startswith("cluster 'rjq-abc' port 8786 did not answer: ")


# Authentication --------------------------------------------------------------------------------


async def test_bad_secret_fails_fast_with_the_gateway_reason(env: Env) -> None:
    tunnel = env.tunnel("tok-mallory")
    with pytest.raises(TunnelAuthError) as err:
        # A refused token is not retried until start's timeout (10 min here): it fails at once,
        # well inside the generous 10 s bound, having sent the token a single time.
        await asyncio.wait_for(tunnel.start(timeout=600), 10)
    assert env.authenticator.seen == ["tok-mallory"]
    assert err.value.reason == "unknown token"
    assert not err.value.temporary
    assert tunnel.state == "failed"
    with pytest.raises(ConnectionRefusedError):  # the local ports were given back
        await asyncio.open_connection("127.0.0.1", tunnel.local_port(8786))


async def test_user_name_is_the_identity_or_the_wildcard(env: Env) -> None:
    keys = load_host_keys(env.host_key)
    for username in ("token", "alice"):
        conn = await connect_gateway(env.address, keys, "tok-alice", username=username)
        conn.close()
    with pytest.raises(TunnelAuthError, match="not the token's identity"):
        await connect_gateway(env.address, keys, "tok-alice", username="bob")


async def test_only_password_login_is_offered(env: Env) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1",
            env.gateway.port,
            username="alice",
            known_hosts=None,
            client_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            agent_path=None,
            config=[],
        )


async def test_refused_token_is_retried_only_once_it_changes(env: Env) -> None:
    current = {"token": "tok-alice"}
    reads: list[str] = []  # every time the tunnel looks at the token: once per connect attempt

    def source() -> str:
        reads.append(current["token"])
        return current["token"]

    async with scheduler("alice") as sched:
        tunnel = env.tunnel(source)
        async with running(env.forwarder("tok-alice", {8786: sched}), tunnel):
            current["token"] = "tok-revoked"
            env.gateway.disconnect("alice")
            await async_wait_until(
                lambda: isinstance(tunnel.last_error, TunnelAuthError), 10, "the refusal"
            )
            assert tunnel.last_error.reason == "unknown token"
            # Three more attempts with the same revoked token: none of them sends it again.
            await async_wait_until(
                lambda: reads.count("tok-revoked") >= 4, 10, "three retries after the refusal"
            )
            assert env.authenticator.seen.count("tok-revoked") == 1  # the bad token: sent once
            current["token"] = "tok-alice"  # e.g. the spawner refreshed the token file
            await async_wait_until(
                lambda: tunnel.connected.is_set() and tunnel.connect_count == 2,
                10,
                "a reconnect with the new token",
            )
            assert await greeting(tunnel.local_address(8786)) == b"alice"


# What the gateway will not do -------------------------------------------------------------------


async def test_no_port_is_bound_per_cluster(env: Env) -> None:
    before = listening_ports()
    async with (
        scheduler("alice") as sched,
        running(env.forwarder("tok-alice", {8786: sched, 8787: sched})),
    ):
        assert len(env.registry) == 2
        after = listening_ports()
    assert after - before == {sched[1]}  # only the stand-in scheduler itself
    assert not {8786, 8787} & after


async def test_no_shell_exec_subsystem_or_other_forwarding(env: Env) -> None:
    prohibited = asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    no_session = (prohibited, "this gateway only forwards cluster ports")
    conn = await connect_gateway(env.address, load_host_keys(env.host_key), "tok-alice")
    async with conn:
        with pytest.raises(asyncssh.ChannelOpenError) as exec_:
            await conn.run("ls")
        with pytest.raises(asyncssh.ChannelOpenError) as shell:
            await conn.create_process()
        with pytest.raises(asyncssh.ChannelOpenError) as sftp:  # a subsystem
            await conn.start_sftp_client()
        with pytest.raises(asyncssh.ChannelOpenError) as unix:
            await conn.open_unix_connection("/var/run/docker.sock")
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_path("/tmp/rjq-gateway.sock", "/tmp/x.sock")
        with pytest.raises(asyncssh.ChannelListenError):  # no dynamic ports, no odd names
            await conn.forward_remote_port("", 0, "127.0.0.1", 1)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("Not A Cluster!", 8786, "127.0.0.1", 1)
        with pytest.raises(asyncssh.ChannelOpenError) as tcp:  # no TCP forwarding to anywhere
            await conn.open_connection("127.0.0.1", env.gateway.port)
    no_unix = (prohibited, "UNIX socket forwarding is not allowed")
    no_tcp = (prohibited, refusal("127.0.0.1", env.gateway.port))
    outcomes = {"exec": exec_, "shell": shell, "sftp": sftp, "unix": unix, "tcp": tcp}
    assert {name: (e.value.code, e.value.reason) for name, e in outcomes.items()} == {
        "exec": no_session,
        "shell": no_session,
        "sftp": no_session,
        "unix": no_unix,
        "tcp": no_tcp,
    }
    assert len(env.registry) == 0


# Reconnects and lifetime ----------------------------------------------------------------------


async def test_both_sides_reconnect_and_the_local_port_stays(env: Env) -> None:
    async with scheduler("alice") as sched:
        fwd, tunnel = env.forwarder("tok-alice", {8786: sched}), env.tunnel("tok-alice")
        async with running(fwd, tunnel):
            address = tunnel.local_address(8786)
            assert await greeting(address) == b"alice"

            assert env.gateway.disconnect("alice") == 2  # the forwarder's and the tunnel's
            await async_wait_until(
                lambda: fwd.connect_count == 2 and fwd.connected.is_set(), 10, "forwarder back"
            )
            await async_wait_until(
                lambda: tunnel.connect_count == 2 and tunnel.connected.is_set(), 10, "tunnel back"
            )

            assert tunnel.local_address(8786) == address
            assert await greeting(address) == b"alice"
            assert len(env.registry.list(identity("alice"))) == 1


async def test_local_connection_waits_for_a_reconnect(env: Env) -> None:
    async with scheduler("alice") as sched:
        fwd, tunnel = env.forwarder("tok-alice", {8786: sched}), env.tunnel("tok-alice")
        async with running(fwd, tunnel):
            env.gateway.disconnect()
            # accepted while both links are down (and the cluster unregistered): served once
            # both are back, in whichever order they return
            assert await greeting(tunnel.local_address(8786)) == b"alice"


async def test_registry_empties_when_the_forwarder_closes(env: Env) -> None:
    async with scheduler("alice") as sched:
        fwd = env.forwarder("tok-alice", {8786: sched, 8787: sched})
        async with running(fwd):
            assert len(env.registry) == 2
    assert fwd.state == "closed" and not fwd.connected.is_set()
    await async_wait_until(lambda: len(env.registry) == 0, 10, "the registry empties")


async def test_registry_replaces_stale_entries_and_ignores_their_late_close() -> None:
    registry = Registry()
    alice, bob = identity("alice"), identity("bob")
    stale_conn, fresh_conn = object(), object()
    stale = registry.register(alice, "rjq-abc", 8786, stale_conn)  # type: ignore[arg-type]
    fresh = registry.register(alice, "rjq-abc", 8786, fresh_conn)  # type: ignore[arg-type]
    assert registry.lookup(alice, "rjq-abc", 8786) is fresh
    stale.close()  # the old connection finally times out
    registry.drop_connection(stale_conn)  # type: ignore[arg-type]
    assert registry.lookup(alice, "rjq-abc", 8786) is fresh
    assert registry.lookup(bob, "rjq-abc", 8786) is None
    fresh.close()
    assert len(registry) == 0


def test_registry_keys_on_issuer_and_subject_not_the_name() -> None:
    registry, conn = Registry(), object()
    alice = identity("alice")
    registry.register(alice, "rjq-abc", 8786, conn)  # type: ignore[arg-type]
    # Another issuer's "alice", and this issuer's other subject called alice: not her.
    elsewhere = Identity("https://other.test", alice.subject, "alice", alice.expires_at)
    namesake = Identity(alice.issuer, "sub-someone-else", "alice", alice.expires_at)
    assert registry.lookup(elsewhere, "rjq-abc", 8786) is None
    assert registry.lookup(namesake, "rjq-abc", 8786) is None
    assert registry.lookup(alice, "rjq-abc", 8786) is not None


def test_registry_caps_forwards_per_user() -> None:
    registry, conn = Registry(max_per_user=2), object()
    alice, bob = identity("alice"), identity("bob")
    registry.register(alice, "rjq-a", 1, conn)  # type: ignore[arg-type]
    registry.register(alice, "rjq-a", 2, conn)  # type: ignore[arg-type]
    registry.register(alice, "rjq-a", 2, conn)  # type: ignore[arg-type]  # a replacement
    with pytest.raises(RegistryFull, match="alice already has 2 forwards"):
        registry.register(alice, "rjq-a", 3, conn)  # type: ignore[arg-type]
    registry.register(bob, "rjq-a", 3, conn)  # type: ignore[arg-type]


def test_a_cluster_belongs_to_the_first_secret_that_claims_it() -> None:
    registry, alice = Registry(), identity("alice")
    registry.claim(alice, "rjq-abc", "the-bundles-secret-0123")
    registry.claim(alice, "rjq-abc", "the-bundles-secret-0123")  # the bundle, reconnecting
    with pytest.raises(ClaimRefused, match="cluster 'rjq-abc' of alice is held by another"):
        registry.claim(alice, "rjq-abc", "a-guess-at-the-secret-000")
    registry.claim(identity("bob"), "rjq-abc", "bobs-own-cluster-secret")  # bob's namespace


async def test_unreachable_gateway_gives_up_after_the_timeout(tmp_path: Path) -> None:
    key = public_key_text(load_or_create_host_key(tmp_path / "key"))
    with closed_port() as port:
        tunnel = Tunnel(f"127.0.0.1:{port}", key, lambda: "tok-alice", "rjq-abc", **FAST)
        with pytest.raises(TunnelUnreachable, match=r"not reachable within 0\.5s"):
            # it gives up after its own timeout, long before this generous bound
            await asyncio.wait_for(tunnel.start(timeout=0.5), 10)
    assert tunnel.state == "failed"


def test_backoff_grows_to_its_maximum_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.next() == 1.0


# Host key ---------------------------------------------------------------------------------------


def test_host_key_is_created_private_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "host_key"
    first = load_or_create_host_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.algorithm == b"ssh-ed25519"
    again = load_or_create_host_key(path)
    assert host_key_fingerprint(again) == host_key_fingerprint(first)
    assert host_key_fingerprint(first).startswith("SHA256:")
    assert (tmp_path / "sub" / "host_key.pub").read_text().strip() == public_key_text(first)
    line = known_hosts_line(first, "gw.example", 2222)
    assert line.startswith("[gw.example]:2222 ssh-ed25519 ")
    # any of these forms pins the same key
    for spec in (public_key_text(first), line, tmp_path / "sub" / "host_key.pub", first):
        assert [k.public_data for k in load_host_keys(spec)] == [first.public_data]
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="has mode 644: it must be 0600"):
        load_or_create_host_key(path)


def test_cli_prints_the_public_key_to_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--host-key", str(tmp_path / "host_key"), "--print-host-key"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == public_key_text(load_or_create_host_key(tmp_path / "host_key"))


async def test_restart_keeps_the_key_and_clients_refuse_another(tmp_path: Path) -> None:
    key_path = tmp_path / "host_key"
    pinned = public_key_text(load_or_create_host_key(key_path))
    auth = FakeAuthenticator(SECRETS)

    async def connect(gateway: Gateway) -> None:
        conn = await connect_gateway(
            f"127.0.0.1:{gateway.port}", load_host_keys(pinned), "tok-alice"
        )
        conn.close()

    for _ in range(2):  # a restart on the same key file is the same gateway to clients
        gateway, _ = await serve("127.0.0.1", 0, key_path, auth)
        async with gateway:
            await connect(gateway)

    impostor, _ = await serve("127.0.0.1", 0, tmp_path / "other_key", auth)
    async with impostor:
        with pytest.raises(TunnelHostKeyError, match="not the pinned one"):
            await connect(impostor)
        tunnel = Tunnel(f"127.0.0.1:{impostor.port}", pinned, lambda: "tok-alice", "rjq-abc")
        with pytest.raises(TunnelHostKeyError):
            await tunnel.start(timeout=5)
    assert len(auth.seen) == 2  # the token was never sent to the impostor


# The real thing ---------------------------------------------------------------------------------


async def test_dask_client_and_dashboard_work_through_the_tunnel(env: Env) -> None:
    from distributed import Client, Scheduler, Worker

    async with (
        Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0") as sched,
        Worker(sched.address),
    ):
        services = {
            8786: ("127.0.0.1", int(sched.address.rsplit(":", 1)[1])),
            8787: ("127.0.0.1", sched.http_server.port),
        }
        tunnel = env.tunnel("tok-alice", services=(8786, 8787))
        async with running(env.forwarder("tok-alice", services), tunnel):
            address = "tcp://" + tunnel.local_address(8786)
            async with Client(address, asynchronous=True) as client:
                assert await client.submit(sum, [1, 2, 3]) == 6
            reader, writer = await asyncio.open_connection(*tunnel.local_address(8787).split(":"))
            writer.write(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            response = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok")


@pytest.mark.security
async def test_a_hub_token_pasted_as_the_user_name_is_never_logged(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pasted = "a1b2c3d4" * 4  # what a JupyterHub API token looks like
    with pytest.raises(TunnelAuthError, match="is not the token's identity"):
        await connect_gateway(
            env.address, load_host_keys(env.host_key), "tok-alice", username=pasted
        )
    assert any("Beginning auth for user" in r.getMessage() for r in caplog.records)
    assert all(pasted not in r.getMessage() for r in caplog.records)
