"""Attacks on one user's clusters by another user of the facility, or by an outsider.

Specification (issue "Users of one facility cannot touch each other"): each test is an attack
someone would try, against the real facility (pool, issuer, gateway) and real host users
(``bob`` is uid 1002 on this machine, ``root`` plays alice the cluster owner), and asserts the
specific refusal. The measured attacks of the issue come first: another user of the host
reaching a local cluster's scheduler and running code as its owner. The last test greps every
job ad, log and argument the suite produced for every token it used.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from pathlib import Path
from unittest import mock

import asyncssh
import dask.config
import pytest
from dask.distributed import Client

from remote_jobqueue import RemoteHTCondorCluster
from remote_jobqueue import schedd as sched
from remote_jobqueue.errors import RemoteJobqueueError
from remote_jobqueue.gateway import JWTAuthenticator, serve
from remote_jobqueue.gateway.hostkeys import (
    load_host_keys,
    load_or_create_host_key,
    public_key_text,
)
from remote_jobqueue.gateway.limits import AddressLimits
from remote_jobqueue.gateway.protocol import CLAIM_HOST
from remote_jobqueue.gateway.tunnel import (
    TunnelAuthError,
    connect_gateway,
    control_request,
    renew_login,
)
from remote_jobqueue.tokens import TokenFileIgnored, TokenValidator, discover_bearer_token
from rjq_facility import gateway_service, issuer, lifecycle

from .helpers import gateway_refusal
from .hub import ensure_host_user, grant_traverse
from .secrets_seen import CLIENT_LOG, leaks, remember, suite_secrets

pytestmark = [pytest.mark.security, pytest.mark.timeout(300)]

AUD = gateway_service.GATEWAY_AUDIENCE


# The attacker: another user of this host ------------------------------------------------------


@pytest.fixture(scope="module")
def bob_on_this_host():
    """``bob`` exists on the host and may run this project's Python (not read our files)."""
    ensure_host_user("bob")
    restore = grant_traverse(Path(os.path.realpath(sys.executable)))
    restore += grant_traverse(Path(sys.prefix) / "bin")
    yield pwd.getpwnam("bob")
    for path, mode in reversed(restore):
        path.chmod(mode)


def as_bob(code: str, timeout: float = 60) -> str:
    """Run ``code`` as bob, in a fresh process with a bare environment; its output."""
    done = subprocess.run(
        ["/usr/sbin/runuser", "-u", "bob", "--", sys.executable, "-c", textwrap.dedent(code)],
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/tmp",
    )
    return done.stdout + done.stderr


_CONNECT_AS_BOB = """
    from distributed import Client, Security
    try:
        with Client({address!r}, security={security}, timeout=10) as client:
            print("RAN AS", client.submit(__import__("os").getuid).result())
    except Exception as err:
        print("REFUSED", type(err).__name__, err)
"""

_RAW_AS_BOB = """
    import socket
    s = socket.create_connection({address!r}, timeout=10)
    s.sendall(b"GET /status HTTP/1.0\\r\\n\\r\\n")
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    print("GOT", repr(data))
"""


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.split("://")[-1].split("/")[0].rsplit(":", 1)
    return host, int(port)


# The measured attack: a second user on the same host, local mode ------------------------------


@pytest.fixture(scope="module")
def local_cluster(bob_on_this_host):
    # The notebook's environment holds tokens; a task must not be able to read them.
    hub_token = "hub-token-of-the-owner-" + uuid.uuid4().hex
    remember(hub_token)
    with (
        mock.patch.dict(os.environ, JUPYTERHUB_API_TOKEN=hub_token, BEARER_TOKEN=hub_token),
        RemoteHTCondorCluster(site="local", n_workers=1, quiet=True) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(1, timeout=60)
        yield cluster, client, hub_token


def test_another_user_without_tls_cannot_reach_a_local_scheduler(local_cluster):
    cluster, _, _ = local_cluster
    plain = cluster.scheduler_address.replace("tls://", "tcp://")
    out = as_bob(_CONNECT_AS_BOB.format(address=plain, security="None"))
    assert "RAN AS" not in out
    assert "REFUSED" in out and ("Connection reset" in out or "CommClosedError" in out), out


def test_another_user_with_a_certificate_of_their_own_cannot_reach_a_local_scheduler(
    local_cluster,
):
    cluster, _, _ = local_cluster
    out = as_bob(
        _CONNECT_AS_BOB.format(address=cluster.scheduler_address, security="Security.temporary()")
    )
    assert "RAN AS" not in out
    assert "REFUSED FatalCommClosedError TLS certificate does not match" in out, out


def test_another_user_cannot_open_a_local_clusters_dashboard(local_cluster):
    import urllib.request

    cluster, _, _ = local_cluster
    with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as response:
        assert response.status == 200  # its owner can
    out = as_bob(_RAW_AS_BOB.format(address=_host_port(cluster.dashboard_link)))
    assert "GOT b''" in out, out  # closed before a byte of the dashboard


def test_a_local_clusters_tasks_see_none_of_the_notebooks_tokens(local_cluster):
    _, client, hub_token = local_cluster

    def environment() -> dict[str, str]:
        return dict(os.environ)

    seen = client.submit(environment, pure=False).result()
    assert "JUPYTERHUB_API_TOKEN" not in seen and "BEARER_TOKEN" not in seen
    assert hub_token not in repr(seen)
    assert hub_token not in repr(client.run_on_scheduler(environment))


def test_a_local_clusters_files_are_its_owners_alone(local_cluster):
    cluster, _, _ = local_cluster
    inputs = cluster._inputs
    assert inputs is not None and inputs.stat().st_mode & 0o777 == 0o700
    for name in ("tls-key.pem", "cluster-secret"):
        assert (inputs / name).stat().st_mode & 0o777 == 0o600, name
    out = as_bob(f"import os; print(sorted(os.listdir({str(inputs)!r})))")
    assert "PermissionError" in out, out


# A remote cluster, reached through its tunnel -------------------------------------------------


@pytest.fixture(scope="module")
def remote_cluster(facility, bob_on_this_host):
    env = lifecycle.env(facility, "alice")
    sched.use_config(env["CONDOR_CONFIG"])
    settings = lifecycle.client_dask_config(facility, "alice")["remote-jobqueue"]
    with (
        mock.patch.dict(os.environ, env),
        dask.config.set({f"remote-jobqueue.{k}": v for k, v in settings.items()}),
        RemoteHTCondorCluster(site="T2_LOCAL", quiet=True) as cluster,
    ):
        remember(cluster._claim_secret)
        yield cluster


def test_another_user_cannot_use_a_tunnels_local_ports(remote_cluster):
    from remote_jobqueue.spec import DASHBOARD_PORT, SCHEDULER_PORT

    tunnel = remote_cluster._tunnel
    for port in (SCHEDULER_PORT, DASHBOARD_PORT):
        address = _host_port("tcp://" + tunnel.local_address(port))
        out = as_bob(_RAW_AS_BOB.format(address=address))
        assert "GOT b''" in out, (port, out)  # the tunnel (it logs in as alice) never opened


def test_the_clients_copy_of_the_secrets_is_gone_once_the_schedd_has_them(remote_cluster):
    # The submit directory stays, 0700, for the job's output should it crash; its secrets
    # (token, claim secret, TLS key) went as soon as the schedd had spooled them.
    inputs = remote_cluster._inputs
    assert [p for p in Path("/tmp").glob(f"{remote_cluster.cluster_id}-*")] == [inputs]
    assert stat.S_IMODE(inputs.stat().st_mode) == 0o700
    left = {path.name for path in inputs.iterdir()}
    assert left == {"bundle.json", "condor-ca.pem", "tls-cert.pem"}, left


def test_a_renewed_token_that_is_not_the_owners_is_not_taken_by_the_bundle(
    facility, remote_cluster
):
    bob = issuer.password_grant(facility, "bob", audience=AUD)["access_token"]

    async def offer() -> dict:
        return await remote_cluster.scheduler_comm.rjq_heartbeat(token=bob)

    answer = remote_cluster.sync(offer)
    assert answer["token"] == "refused"
    log = remote_cluster.get_logs()["Bundle"]
    assert "refused a renewed token" in log and "bob's, not alice's" in log


def test_no_token_is_in_a_process_argument_while_a_cluster_runs(facility, remote_cluster):
    secrets = suite_secrets(facility)
    arguments = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                arguments.append((f"pid {proc.name}", (proc / "cmdline").read_bytes().decode()))
            except OSError:
                continue
    assert list(leaks(arguments, secrets)) == []


def test_the_bundles_and_workers_logs_hold_no_token(facility, remote_cluster):
    def scratch_logs() -> dict[str, str]:
        from pathlib import Path

        return {  # HTCondor keeps the job's own output in _condor_stdout / _condor_stderr
            p.name: p.read_text(errors="replace")
            for p in Path(".").iterdir()
            if (p.suffix == ".log" or p.name.startswith("_condor_std")) and p.is_file()
        }

    remote_cluster.scale(1)
    with Client(remote_cluster) as client:
        client.wait_for_workers(1, timeout=120)
        logs = client.run_on_scheduler(scratch_logs)
    assert {"_condor_stderr", "_condor_stdout"} <= set(logs), sorted(logs)
    assert any(name.startswith("worker-") for name in logs), sorted(logs)  # the resident one
    assert list(leaks(logs.items(), suite_secrets(facility))) == []


def test_tls_false_is_refused_before_anything_is_submitted(facility, alice):
    with pytest.raises(RemoteJobqueueError, match="tls=False is refused: without TLS anyone"):
        RemoteHTCondorCluster(site="T2_A", tls=False, quiet=True)
    with pytest.raises(RemoteJobqueueError, match="tls=False is refused"):
        RemoteHTCondorCluster(site="local", tls=False, quiet=True)


# The gateway, attacked with real tokens of the facility's issuer -------------------------------


def _keys(facility):
    return load_host_keys(gateway_service.public_host_key(facility))


def _token(facility, user: str = "alice", **kw) -> str:
    return issuer.password_grant(facility, user, audience=AUD, **kw)["access_token"]


def _namesake_token(facility) -> str:
    """What a second account called alice gets from the issuer: another subject."""
    real = issuer.Issuer(facility.state_dir, facility.issuer_url)
    now = int(time.time())
    claims = {
        "iss": facility.issuer_url,
        "sub": str(uuid.uuid4()),
        "aud": AUD,
        "exp": now + 300,
        "iat": now,
        "preferred_username": "alice",
    }
    token = real._sign(claims, issuer.ACCESS_TOKEN_TYP)
    remember(token)
    return token


def test_a_namesake_of_the_owner_cannot_reach_their_cluster(facility, remote_cluster):
    cid = remote_cluster.cluster_id
    refusal = asyncio.run(gateway_refusal(facility, _namesake_token(facility), cid))
    assert refusal.reason == f"no cluster {cid!r} with port 8786 registered for you"


def test_a_second_connection_of_the_owner_cannot_take_over_a_live_cluster(facility, remote_cluster):
    """A token of alice that leaked (to a shared server, say) does not hold the cluster's
    secret: it can neither claim the cluster's name nor register its ports."""
    cid = remote_cluster.cluster_id

    async def attack() -> tuple[str, bool]:
        conn = await connect_gateway(facility.gateway, _keys(facility), _token(facility))
        try:
            with pytest.raises(TunnelAuthError) as claim:
                await control_request(conn, CLAIM_HOST, f"{cid} a-guess-at-the-secret-0000")
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port(cid, 8786, "127.0.0.1", 9)
            return claim.value.reason, True
        finally:
            conn.close()

    reason, _ = asyncio.run(attack())
    assert reason == f"cluster {cid!r} of alice is held by another bundle"
    with Client(remote_cluster) as client:  # and the owner's cluster still answers
        assert client.submit(sum, [1, 2]).result() == 3


def test_a_gateway_connection_ends_when_its_token_expires(facility):
    async def attack() -> float:
        conn = await connect_gateway(
            facility.gateway, _keys(facility), _token(facility, expires_in=3)
        )
        started = time.monotonic()
        await asyncio.wait_for(conn.wait_closed(), 30)
        return time.monotonic() - started

    assert asyncio.run(attack()) < 20  # at the token's expiry, not at the next keepalive


def test_a_login_cannot_be_renewed_with_another_users_token(facility):
    async def attack() -> str:
        conn = await connect_gateway(facility.gateway, _keys(facility), _token(facility))
        try:
            with pytest.raises(TunnelAuthError) as refused:
                await renew_login(conn, _token(facility, "bob"))
            return refused.value.reason
        finally:
            conn.close()

    assert asyncio.run(attack()) == "the token is bob's, not alice's"


def test_a_login_cannot_be_renewed_with_an_expired_token(facility):
    expired = _token(facility, expires_in=1)
    time.sleep(12)  # past the gateway validator's 10 s leeway

    async def attack() -> str:
        conn = await connect_gateway(facility.gateway, _keys(facility), _token(facility))
        try:
            with pytest.raises(TunnelAuthError) as refused:
                await renew_login(conn, expired)
            return refused.value.reason
        finally:
            conn.close()

    assert asyncio.run(attack()) == "token expired"


def test_the_gateway_serves_no_shell_and_forwards_to_no_host(facility):
    async def attack() -> tuple[str, str]:
        conn = await connect_gateway(facility.gateway, _keys(facility), _token(facility))
        try:
            with pytest.raises(asyncssh.ChannelOpenError) as shell:
                await conn.run("id", check=True)
            with pytest.raises(asyncssh.ChannelOpenError) as forward:
                await conn.open_connection(facility.issuer_url.split("//")[1].split(":")[0], 22)
            return shell.value.reason, forward.value.reason
        finally:
            conn.close()

    shell, forward = asyncio.run(attack())
    assert shell == "this gateway only forwards cluster ports"
    assert "registered for you" in forward


# Denial of service before login: a gateway of the real code, trusting the real issuer ----------


@pytest.fixture
def private_gateway(facility, tmp_path):
    """The facility's gateway code on a port of its own, so a locked-out address locks out
    no other test."""

    async def start():
        validator = TokenValidator(facility.issuer_url, [AUD])
        limits = AddressLimits(max_preauth=4, max_failures=3, failure_window=60)
        gateway, _ = await serve(
            "127.0.0.1", 0, tmp_path / "host_key", JWTAuthenticator(validator), limits=limits
        )
        return gateway

    return start, tmp_path / "host_key"


def test_guessing_tokens_locks_the_address_out_even_for_a_good_token(facility, private_gateway):
    start, key_path = private_gateway

    async def attack() -> str:
        gateway = await start()
        async with gateway:
            keys = load_host_keys(public_key_text(load_or_create_host_key(key_path)))
            address = f"127.0.0.1:{gateway.port}"
            for guess in range(3):
                with pytest.raises(TunnelAuthError, match="malformed token"):
                    await connect_gateway(address, keys, f"guess-{guess}-" + "x" * 20)
            with pytest.raises(TunnelAuthError) as locked:
                await connect_gateway(address, keys, _token(facility))
            return locked.value.reason

    reason = asyncio.run(attack())
    assert reason.startswith("too many failed logins from 127.0.0.1: try again in")


def test_a_flood_of_unauthenticated_connections_is_cut_off(facility, private_gateway):
    start, _ = private_gateway

    async def attack() -> bool:
        gateway = await start()
        async with gateway:
            held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(4)]
            reader, _ = await asyncio.open_connection("127.0.0.1", gateway.port)
            closed = await asyncio.wait_for(reader.read(), 10) == b""
            for _, writer in held:
                writer.close()
            return closed

    assert asyncio.run(attack())


# Token discovery ---------------------------------------------------------------------------


def test_a_token_file_planted_by_another_user_is_ignored(bob_on_this_host):
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="rjq-shared-tmp-"))
    shared.chmod(0o1777)  # a /tmp of its own, as shared as the real one
    planted = shared / f"bt_u{os.geteuid()}"
    as_bob(f"open({str(planted)!r}, 'w').write('eyJ.planted.by-bob-0123456789abcdef')")
    try:
        assert planted.stat().st_uid == bob_on_this_host.pw_uid
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert discover_bearer_token({}, tmp_dir=shared) is None
    finally:
        shutil.rmtree(shared)
    messages = [str(w.message) for w in caught if issubclass(w.category, TokenFileIgnored)]
    assert any(f"owned by uid {bob_on_this_host.pw_uid}" in m for m in messages), messages


# What the whole suite left behind ----------------------------------------------------------


def _job_ad_texts(facility) -> list[tuple[str, str]]:
    schedd = sched.locate(facility.collector, facility.schedd_name)
    ads = list(schedd.query("true", projection=[]))
    ads += list(schedd.history("true", projection=[], match=-1))
    return [(f"job {ad.get('ClusterId')}.{ad.get('ProcId')}", str(ad)) for ad in ads]


def _is_log(path: Path) -> bool:
    name = path.name
    return (
        path.suffix in (".log", ".err", ".out") or "Log" in name or name.startswith("_condor_std")
    )


def _log_texts(*roots: Path) -> list[tuple[str, str]]:
    """Every log of the daemons (pool, issuer, gateway, XRootD), of the jobs kept in the spool,
    and of what the tests started themselves (the Hub, their gateways)."""
    texts = [(str(CLIENT_LOG), CLIENT_LOG.read_text(errors="replace"))]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and _is_log(path):
                texts.append((str(path), path.read_text(errors="replace")))
    return texts


@pytest.mark.after_all
def test_no_token_of_the_suite_is_in_any_job_ad_or_log(facility, tmp_path_factory):
    secrets = suite_secrets(facility)
    assert len(secrets) > 10, "the issuer recorded the tokens it issued"
    logs = _log_texts(facility.logs, facility.state_dir / "condor", tmp_path_factory.getbasetemp())
    assert len(logs) > 5
    found = list(leaks(_job_ad_texts(facility) + logs, secrets))
    assert found == []
