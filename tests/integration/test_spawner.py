"""The JupyterHub spawner against a real Hub, the facility's issuer and its pool.

Specification (issue 4):
1. a user logs in through the issuer's authorization-code flow; the spawned server's
   environment names a 0600 token file (BEARER_TOKEN_FILE) holding the user's access token,
   and carries the HTCondor, gateway, site-catalogue and XRootD settings;
2. no client secret, refresh token or access token is in the server's environment;
3. with 60-second tokens, the file is replaced by a newer valid token before the old one
   expires, again and again, for minutes;
4. from the server's environment, as the user, RemoteHTCondorCluster starts at T2_A, computes
   and closes, authenticated by the spawned token alone (SciTokens at the schedd), and a
   root:// read goes through the cache;
5. another user's server cannot read the token file;
6. the gateway takes a user's JupyterHub API token (checked with the Hub) as that user;
7. `remote-jobqueue run` typed in a JupyterLab terminal goes on when the terminal is shut
   down, past the (60-second) token it started with; `clusters logs --follow` in a new
   terminal shows its end and status; its refresh token is revoked when it ends.
"""

from __future__ import annotations

import os
import pwd
import secrets
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from remote_jobqueue.gateway import (
    ReverseForwarder,
    TunnelAuthError,
    connect_gateway,
    load_host_keys,
    load_or_create_host_key,
)
from remote_jobqueue.tokens import WLCG_ANY_AUDIENCE, TokenValidator, write_private_file
from rjq_facility import issuer
from rjq_facility.processes import wait_for_port

from ..waiting import wait_until
from .helpers import IssuerLog, jobs_of
from .hub import (
    RUNTIME_BASE,
    Hub,
    LabTerminal,
    cleanup_runtime,
    ensure_host_user,
    free_port,
    grant_traverse,
    leftover_pids,
    process_environment,
)
from .secrets_seen import remember

pytestmark = pytest.mark.timeout(600)

LIFETIME = 60  # seconds a token lives
MARGIN = 300.0  # renew at min(margin, lifetime / 2) before expiry
WATCH = 150  # seconds the refresh is watched


@pytest.fixture(scope="module")
def hub(facility, tmp_path_factory):
    for user in facility.users:
        ensure_host_user(user)
    # Servers run as the users: they execute the interpreter and this checkout's virtualenv,
    # wherever they are (under /root with pyenv, or in a 0700 directory from mktemp).
    restore = grant_traverse(Path(os.path.realpath(sys.executable)))
    restore += grant_traverse(Path(sys.prefix) / "bin")
    cleanup_runtime()
    RUNTIME_BASE.mkdir(mode=0o755)
    workdir = tmp_path_factory.mktemp("hub")
    the_hub = Hub(facility, "", workdir, secrets.token_hex(32))
    try:
        the_hub.start(lifetime=LIFETIME, margin=MARGIN)
        yield the_hub
    finally:
        the_hub.stop()
        for path, mode in reversed(restore):
            path.chmod(mode)
        cleanup_runtime()
    assert not leftover_pids(the_hub.api), "processes of the Hub's servers are left"


def spawned(hub: Hub, user: str) -> dict:
    hub.login(user)
    server = hub.spawn(user)
    model = hub.user(user)
    pid = server["state"]["pid"]
    return {"pid": pid, "env": process_environment(pid), "auth_state": model["auth_state"]}


@pytest.fixture(scope="module")
def alice(hub):
    return spawned(hub, "alice")


@pytest.fixture(scope="module")
def bob(hub):
    return spawned(hub, "bob")


def claims_of(facility, token: str) -> dict:
    return TokenValidator(facility.issuer_url, WLCG_ANY_AUDIENCE, leeway=0).validate(token)


# 1. identity and settings ------------------------------------------------------------------


def test_token_file_is_private_to_the_user_and_holds_their_token(facility, alice):
    path = Path(alice["env"]["BEARER_TOKEN_FILE"])
    st, uid = path.stat(), pwd.getpwnam("alice").pw_uid
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == uid
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and path.parent.stat().st_uid == uid
    assert claims_of(facility, path.read_text())["preferred_username"] == "alice"


def test_environment_carries_htcondor_gateway_sites_and_xrootd_settings(facility, alice):
    env = alice["env"]
    assert env["CONDOR_CONFIG"] == "ONLY_ENV"
    assert env["_CONDOR_COLLECTOR_HOST"] == facility.collector
    assert env["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] == "SCITOKENS"
    assert env["_CONDOR_SCITOKENS_FILE"] == env["BEARER_TOKEN_FILE"]
    assert Path(env["_CONDOR_AUTH_SSL_CLIENT_CAFILE"]).exists()
    sites = eval(env["DASK_REMOTE_JOBQUEUE__SITES"])  # a Python literal, as Dask reads it
    assert set(sites) == {s.name for s in facility.sites}
    assert all(s["gateway"] == facility.gateway and s["gateway-host-key"] for s in sites.values())
    assert sites["T2_A"]["label"] == "HTCondor-T2_A"
    assert env["XROOT_PROXY"] == f"{facility.hub_cache_url}//"
    assert (Path(env["XRD_PLUGINCONFDIR"]) / "proxy.conf").exists()
    # Kernels (`!remote-jobqueue ...`) find the commands installed beside the server's own.
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_site_picker_in_the_server_shows_the_catalogue(facility, alice):
    sorted_sites = sorted(facility.sites, key=lambda s: s.name)
    out = run_as("alice", alice["env"], "from remote_jobqueue import sites; print(sites.choices())")
    choices = eval(out.strip())
    assert choices[0] == ("random", "HTCondor (random site)") and choices[-1] == ("local", "Local")
    assert sorted(choices[1:-1]) == [(s.name, f"HTCondor-{s.name}") for s in sorted_sites]


# 2. no secrets -------------------------------------------------------------------------------


def test_no_client_secret_or_jwt_in_the_environment(facility, alice):
    values = "\0".join(f"{k}={v}" for k, v in alice["env"].items())
    secret = issuer.client_secret(facility)
    assert secret and secret not in values
    assert "eyJ" not in values  # no JWT at all (the access token only in the file)
    files = [p for p in Path(alice["env"]["RJQ_RUNTIME_DIR"]).rglob("*") if p.is_file()]
    assert files, "the server's runtime directory holds no file to check"
    for path in files:
        assert secret not in path.read_text(), path


def test_the_servers_own_token_cannot_get_at_the_refresh_token(alice):
    env = alice["env"]
    r = requests.get(
        f"{env['JUPYTERHUB_API_URL']}/users/alice",
        headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"},
        timeout=30,
    )
    state = r.json()["auth_state"]  # what the refresher reads
    assert state["access_token"] and state["refresh_handle"]
    assert "refresh_token" not in state and "refresh_token" not in state["token_response"]


# 3. fresh for as long as the server runs -------------------------------------------------------


def test_token_file_is_renewed_before_expiry_for_minutes(facility, alice):
    path = Path(alice["env"]["BEARER_TOKEN_FILE"])
    seen: dict[str, float] = {}  # token -> exp
    margins: list[float] = []  # seconds the old token had left when the new one appeared
    deadline = time.time() + WATCH
    while time.time() < deadline:
        token = path.read_text()
        now = time.time()
        if token not in seen:
            if seen:
                margins.append(list(seen.values())[-1] - now)
            seen[token] = claims_of(facility, token)["exp"]  # valid, signed, alice's
        assert seen[token] > now, "the token file held an expired token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        time.sleep(1)
    exps = list(seen.values())
    print(f"\n{len(exps)} tokens in {WATCH} s; old token's time left at each renewal: {margins}")
    assert len(exps) >= 1 + WATCH // LIFETIME, f"only {len(exps)} tokens in {WATCH} s"
    assert exps == sorted(exps), "a token was replaced by an older one"


# 4. clusters and data from the server's environment ---------------------------------------------


def run_as(user: str, env: dict[str, str], code: str, timeout: float = 240) -> str:
    account = pwd.getpwnam(user)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        cwd=account.pw_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_remote_cluster_runs_on_the_spawned_token_alone(facility, alice):
    env = alice["env"]
    assert not any(k in env for k in ("SEC_TOKEN_DIRECTORY", "_CONDOR_SEC_TOKEN_DIRECTORY"))
    out = run_as(
        "alice",
        env,
        """
        from dask.distributed import Client
        from remote_jobqueue import RemoteHTCondorCluster
        from remote_jobqueue import schedd as sched

        with RemoteHTCondorCluster(site="T2_A", quiet=True) as cluster:
            cluster.scale(1)
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=120)
                print("sum", client.submit(sum, range(10)).result())
            s = sched.locate(cluster.site.collector, cluster.site.schedd)
            ads = sched.job_ads(s, f'RjqClusterId == "{cluster.cluster_id}"', ["Owner"])
            owners = {ad.get("Owner") for ad in ads}
            print("owners", sorted(owners))
        print("closed")
        """,
    )
    assert "sum 45" in out and "closed" in out
    assert "owners ['alice']" in out


def test_root_reads_from_the_server_go_through_the_cache(facility, alice):
    out = run_as(
        "alice",
        alice["env"],
        f"""
        from XRootD import client
        f = client.File()
        status, _ = f.open("{facility.origin_url}//store/mc/DYJetsToMuMu/NANOAOD/nano_000.root")
        assert status.ok, status.message
        print("server", f.get_property("DataServer"))
        f.close()
        """,
        timeout=60,
    )
    assert f":{facility.cache_port}" in out.split("server", 1)[1]


# 5. isolation --------------------------------------------------------------------------------


def test_another_users_server_cannot_read_the_token_file(alice, bob):
    assert bob["env"]["BEARER_TOKEN_FILE"] != alice["env"]["BEARER_TOKEN_FILE"]
    proc = subprocess.run(
        [sys.executable, "-c", f"open({alice['env']['BEARER_TOKEN_FILE']!r}).read()"],
        env=bob["env"],
        user=pwd.getpwnam("bob").pw_uid,
        group=pwd.getpwnam("bob").pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0 and "PermissionError" in proc.stderr


# 6. the gateway with Hub API tokens --------------------------------------------------------------


# 7. a detached run from a JupyterLab terminal ------------------------------------------------

#: Without renewal its cluster ends 10 s (the lease) after its last token does: at most 60 s
#: after the start, plus one the client may have handed on before the terminal closed.
OUTLIVES = """\
import time
from distributed import Client
time.sleep(100)
with Client() as client:
    print("after the token:", client.submit(sum, range(10)).result())
"""


ACTIVATE = Path(sys.prefix) / "bin" / "activate"


def test_a_run_from_a_lab_terminal_outlives_the_terminal_and_its_token(facility, hub, alice):
    import asyncio

    made = hub.call(
        "POST",
        "/users/alice/tokens",
        json={"scopes": ["access:servers!user=alice"], "expires_in": 900, "note": "terminal"},
    )
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    remember(token)
    headers = {"Authorization": f"token {token}"}
    saved = requests.put(  # as the lab's editor saves a file
        f"{hub.url}/user/alice/api/contents/outlives.py",
        json={"type": "file", "format": "text", "content": OUTLIVES},
        headers=headers,
        timeout=30,
    )
    assert saved.status_code in (200, 201), saved.text
    issuer_log = IssuerLog(facility)

    async def scenario() -> tuple[str, str]:
        async with LabTerminal(hub, "alice", token) as terminal:
            # A login shell (as Jupyter starts it) takes Debian's PATH from /etc/profile: the
            # user activates the environment that has remote-jobqueue, as with any venv.
            await terminal.type(f". {ACTIVATE}")
            await terminal.type(
                "DASK_REMOTE_JOBQUEUE__LEASE=10 "
                "remote-jobqueue run --site T2_A --linger 60 outlives.py"
            )
            found = await terminal.read_until(
                r"(rjq-[0-9a-f]{12}): running outlives.py", 180, unless=r"not found|error:"
            )
        cluster_id = found.group(1)  # the terminal is shut down: the run's command is gone
        started = time.monotonic()
        await asyncio.sleep(90)
        assert jobs_of(facility, cluster_id), "the run goes on past the terminal and its token"
        async with LabTerminal(hub, "alice", token) as terminal:
            await terminal.type(f". {ACTIVATE}")
            await terminal.type(f"remote-jobqueue clusters logs {cluster_id} --follow; echo st=$?")
            await terminal.read_until(r"st=\d+", 240 - (time.monotonic() - started))
            return cluster_id, terminal.output

    cluster_id, output = asyncio.run(scenario())
    assert "after the token: 45" in output
    assert "the script exited with status 0" in output and "st=0" in output
    wait_until(lambda: not jobs_of(facility, cluster_id), 150, "the cluster ends after the run")
    exchange, refresh, revoked = issuer_log.first_of(
        "grant=token-exchange client=remote-jobqueue user=alice",
        "grant=refresh_token client=remote-jobqueue user=alice",
        "revocation: client=remote-jobqueue user=alice",
    )
    assert exchange < refresh < revoked


@pytest.fixture(scope="module")
def hub_gateway(facility, hub, tmp_path_factory):
    """A gateway that trusts the issuer's JWTs and this Hub's API tokens."""
    workdir = tmp_path_factory.mktemp("gateway")
    host_key = load_or_create_host_key(workdir / "host_key")
    service_token = workdir / "hub-service-token"  # reads users' subjects (auth_state)
    write_private_file(service_token, hub.service_token)
    port = free_port()
    with (workdir / "gateway.log").open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "remote_jobqueue.gateway",
                "--listen", f"127.0.0.1:{port}",
                "--host-key", str(workdir / "host_key"),
                "--issuer", facility.issuer_url,
                "--audience", WLCG_ANY_AUDIENCE,
                "--hub-api-url", hub.api,
                "--hub-service-token-file", str(service_token),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", port)
        yield f"127.0.0.1:{port}", load_host_keys(host_key)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.security
async def test_gateway_takes_a_hub_api_token_as_its_user(hub_gateway, alice, bob):
    address, keys = hub_gateway
    alice_hub_token = alice["env"]["JUPYTERHUB_API_TOKEN"]
    conn = await connect_gateway(address, keys, alice_hub_token, username="alice")
    conn.close()
    bob_hub_token = bob["env"]["JUPYTERHUB_API_TOKEN"]
    with pytest.raises(TunnelAuthError, match="'alice' is not the token's identity; use 'bob'"):
        await connect_gateway(address, keys, bob_hub_token, username="alice")  # bob, not alice
    with pytest.raises(TunnelAuthError, match="the Hub does not know this token") as unknown:
        await connect_gateway(address, keys, secrets.token_hex(16))
    assert not unknown.value.temporary
    # The issuer's JWTs still work on the same gateway.
    token = Path(alice["env"]["BEARER_TOKEN_FILE"]).read_text()
    conn = await connect_gateway(address, keys, token, username="alice")
    conn.close()


async def test_a_hub_login_and_a_jwt_login_of_a_user_are_one_identity(hub_gateway, alice):
    """The bundle registers with the user's JWT, the notebook may come with its Hub token: both
    are the issuer's subject, so the cluster is reachable either way."""
    import asyncio

    address, keys = hub_gateway
    jwt = Path(alice["env"]["BEARER_TOKEN_FILE"]).read_text().strip()

    async def greet(reader, writer):
        writer.write(b"alice's scheduler\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        ReverseForwarder(
            address,
            keys,
            lambda: jwt,
            "rjq-one-identity",
            {8786: ("127.0.0.1", port)},
            secrets.token_urlsafe(24),
        ),
    ):
        conn = await connect_gateway(address, keys, alice["env"]["JUPYTERHUB_API_TOKEN"])
        try:
            reader, _ = await conn.open_connection("rjq-one-identity", 8786)
            assert await reader.readline() == b"alice's scheduler\n"
        finally:
            conn.close()


@pytest.mark.security
async def test_a_hub_token_without_the_gateway_scope_is_refused(hub_gateway, hub):
    """A token alice made for something else (or one a shared server got from a visitor)
    names alice, but does not hold the gateway's custom scope."""
    address, keys = hub_gateway
    made = hub.call(
        "POST", "/users/alice/tokens", json={"scopes": ["read:users!user"], "note": "other"}
    )
    made.raise_for_status()
    token = made.json()["token"]
    remember(token)
    with pytest.raises(TunnelAuthError, match="lacks the scope custom:remote-jobqueue:gateway"):
        await connect_gateway(address, keys, token)
