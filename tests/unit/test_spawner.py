"""The spawner's pieces without a Hub: environment, secret filtering, refresh timing, refresher.

A fake Hub API on loopback hands out auth_state the way JupyterHub does for a server token
with the ``admin:auth_state!user`` scope.
"""

from __future__ import annotations

import ast
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from remote_jobqueue.spawner import authhooks, expiry, refresher
from remote_jobqueue.spawner.environment import (
    ServerSettings,
    server_environment,
    without_secrets,
)

SITES = {
    "T2_A": {
        "collector": "10.0.0.1:9618",
        "schedd": "hub@test",
        "gateway": "10.0.0.1:2222",
        "gateway-host-key": "ssh-ed25519 AAAAC3Nza key",
        "label": "HTCondor-T2_A",
    }
}


def token(lifetime: float = 60, *, iat: float | None = None, sub: str = "alice") -> str:
    iat = time.time() if iat is None else iat
    claims = {"sub": sub, "iat": int(iat), "exp": int(iat + lifetime), "jti": os.urandom(4).hex()}
    return jwt.encode(claims, "not-checked-here-" * 4, algorithm="HS256")


def settings(dask: dict[str, Any] | None = None, **kw: Any) -> ServerSettings:
    base = {
        "runtime_dir": "/run/rjq/alice",
        "collector": "10.0.0.1:9618",
        "condor_ca_file": "/etc/rjq/ca.pem",
        "xrootd_cache": "root://10.0.0.1:11095",
        "xrootd_origin": "root://10.0.0.1:11094",
    }
    dask = {"sites": SITES, "site": "random", **(dask or {})}
    return ServerSettings(**{**base, "dask": dask, **kw})


# The environment ----------------------------------------------------------------------------


def test_environment_names_the_token_file_and_never_holds_a_token():
    env = server_environment(settings())
    assert env["BEARER_TOKEN_FILE"] == "/run/rjq/alice/bearer-token"
    assert "BEARER_TOKEN" not in env
    assert not any(v.startswith("eyJ") for v in env.values())


def test_htcondor_uses_scitokens_from_the_same_file_with_only_the_environment():
    env = server_environment(settings())
    assert env["CONDOR_CONFIG"] == "ONLY_ENV"
    assert env["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] == "SCITOKENS"
    assert env["_CONDOR_SCITOKENS_FILE"] == env["BEARER_TOKEN_FILE"]
    assert env["_CONDOR_COLLECTOR_HOST"] == "10.0.0.1:9618"
    assert env["_CONDOR_AUTH_SSL_CLIENT_CAFILE"] == "/etc/rjq/ca.pem"


def test_dask_reads_back_the_site_catalogue_and_settings(monkeypatch):
    import dask.config

    for key, value in server_environment(settings()).items():
        monkeypatch.setenv(key, value)
    dask.config.refresh()
    try:
        from remote_jobqueue import config, sites

        assert config.get("sites") == SITES
        assert config.get("token-file") == "/run/rjq/alice/bearer-token"
        assert config.get("site") == "random"
        assert sites.choices() == [
            ("random", "HTCondor (random site)"),
            ("T2_A", "HTCondor-T2_A"),
            ("local", "Local"),
        ]
    finally:
        for key in server_environment(settings()):
            monkeypatch.delenv(key)
        dask.config.refresh()


def test_dask_values_stay_strings_even_when_they_look_like_numbers():
    env = server_environment(settings({"gateway": "1e5"}))
    assert ast.literal_eval(env["DASK_REMOTE_JOBQUEUE__GATEWAY"]) == "1e5"


def test_xrootd_reads_go_through_the_cache():
    env = server_environment(settings())
    assert env["XROOT_PROXY"] == "root://10.0.0.1:11095//"
    assert env["XRD_PLUGINCONFDIR"] == "/run/rjq/alice/xrootd-plugins"
    assert env["RJQ_XROOTD_ORIGIN"] == "root://10.0.0.1:11094"


@pytest.mark.parametrize(
    "name, value",
    [
        ("OAUTH_CLIENT_SECRET", "s3cret"),
        ("GENERIC_CLIENT_SECRET", "s3cret"),
        ("JUPYTERHUB_CRYPT_KEY", "abc"),
        ("REFRESH_TOKEN", "r"),
        ("BEARER_TOKEN", "t"),
        ("SOMETHING", token()),
    ],
)
def test_credentials_never_reach_the_server(name, value):
    env, dropped = without_secrets({name: value, "JUPYTERHUB_API_TOKEN": "abc", "PATH": "/bin"})
    assert name not in env and dropped == [name]
    assert env["JUPYTERHUB_API_TOKEN"] == "abc"  # the server's own token stays


@pytest.mark.parametrize(
    "value",
    [
        {"valueFrom": {"secretKeyRef": {"name": "hub", "key": "anything"}}},
        {"value": token()},
    ],
    ids=["a-kubernetes-secret", "a-jwt-in-an-env-var-object"],
)
def test_kubernetes_env_var_objects_holding_credentials_never_reach_the_server(value):
    plain = {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    env, dropped = without_secrets({"INNOCENT": value, "POD_IP": plain})
    assert dropped == ["INNOCENT"] and env == {"POD_IP": plain}


def test_the_mixin_wraps_a_cmd_of_none_around_the_default_command():
    pytest.importorskip("jupyterhub")
    from remote_jobqueue.spawner import LocalProcessRemoteSpawner

    spawner = LocalProcessRemoteSpawner(sites=SITES, cmd=None, default_cmd=["my-singleuser"])
    with spawner.refresher_wrapped_cmd():
        assert spawner.cmd[-2:] == ["--", "my-singleuser"]
        with spawner.refresher_wrapped_cmd():  # nested: wrapped once
            assert spawner.cmd.count("--") == 1
    assert spawner.cmd is None


def test_a_local_servers_terminals_find_the_commands_installed_beside_it():
    pytest.importorskip("jupyterhub")
    from remote_jobqueue.spawner.local import SYSTEM_PATH, server_path

    wrapped = ["/usr/bin/python3", "-m", "remote_jobqueue.spawner.refresher", "--"]
    singleuser = "/opt/lab/bin/jupyterhub-singleuser"
    assert server_path([*wrapped, singleuser, "--debug"]) == f"/opt/lab/bin:{SYSTEM_PATH}"
    assert server_path([singleuser]) == f"/opt/lab/bin:{SYSTEM_PATH}"
    assert server_path([*wrapped, "jupyterhub-singleuser"]) == f"/usr/bin:{SYSTEM_PATH}"
    assert server_path(["jupyterhub-singleuser"]) == server_path(None) == SYSTEM_PATH


def test_the_mixin_asks_for_a_server_token_that_reads_auth_state():
    pytest.importorskip("jupyterhub")
    from remote_jobqueue.spawner import LocalProcessRemoteSpawner

    spawner = LocalProcessRemoteSpawner(sites=SITES)
    assert "admin:auth_state!user" in spawner.server_token_scopes
    assert "access:servers!server" in spawner.server_token_scopes
    assert spawner.collector == "10.0.0.1:9618"
    assert spawner.refresher_command(["jupyterhub-singleuser"])[-2:] == [
        "--",
        "jupyterhub-singleuser",
    ]
    assert authhooks.USER_ROLE["scopes"][-1] in spawner.server_token_scopes


# Timing -------------------------------------------------------------------------------------


def test_renewal_window_is_the_margin_but_at_most_half_the_lifetime():
    assert expiry.window(3600, 300) == 300
    assert expiry.window(60, 300) == 30


def test_the_hub_refreshes_a_little_before_the_refresher_asks():
    t = token(60, iat=1000)
    assert not expiry.refresh_due(t, 300, now=1024)
    assert expiry.refresh_due(t, 300, lead=expiry.HUB_LEAD, now=1026)
    assert not expiry.refresh_due(t, 300, now=1026)
    assert expiry.refresh_due(t, 300, now=1031)


def test_refresher_sleeps_until_the_window_and_never_too_long():
    t = token(60, iat=1000)
    assert refresher.seconds_until_due(t, 300, now=1000) == 30
    assert refresher.seconds_until_due(t, 300, now=1045) == 0
    assert refresher.seconds_until_due(None, 300, now=0) == 0
    assert refresher.seconds_until_due(token(86400, iat=0), 300, now=0) == refresher.MAX_SLEEP


# The refresher against a fake Hub API ----------------------------------------------------------


class FakeHub:
    """``GET /hub/api/users/<name>``: auth_state for the right server token, 403 otherwise."""

    def __init__(self, api_token: str = "server-token") -> None:
        self.api_token = api_token
        self.auth_state: dict[str, Any] | None = {"access_token": token()}
        self.requests = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.requests += 1
                if self.headers.get("Authorization") != f"token {hub.api_token}":
                    self.send_response(403)
                    self.end_headers()
                    return
                body = json.dumps({"name": "alice", "auth_state": hub.auth_state}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def environ(self, token_file: Path, api_token: str | None = None) -> dict[str, str]:
        return {
            "JUPYTERHUB_API_URL": self.url,
            "JUPYTERHUB_API_TOKEN": api_token or self.api_token,
            "JUPYTERHUB_USER": "alice",
            "BEARER_TOKEN_FILE": str(token_file),
        }


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    yield fake
    fake.server.shutdown()


def test_refresher_writes_the_hubs_token_0600(hub, tmp_path):
    path = tmp_path / "bt"
    assert refresher.update_once(path, hub.environ(path))
    assert path.read_text() == hub.auth_state["access_token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refresher_never_replaces_a_token_with_an_older_one(hub, tmp_path):
    path = tmp_path / "bt"
    newer = token(120)
    path.write_text(newer)
    hub.auth_state = {"access_token": token(60)}
    assert not refresher.update_once(path, hub.environ(path))
    assert path.read_text() == newer


def test_refresher_says_why_without_auth_state_and_never_shows_the_token(hub, tmp_path):
    path = tmp_path / "bt"
    hub.auth_state = None
    with pytest.raises(refresher.HubError, match="admin:auth_state"):
        refresher.update_once(path, hub.environ(path))
    with pytest.raises(refresher.HubError, match="403") as err:
        refresher.update_once(path, hub.environ(path, api_token="wrong"))
    assert "wrong" not in str(err.value)


def test_refresher_refuses_a_token_directory_of_someone_else(tmp_path):
    os.chown(tmp_path, 12345, 12345)
    with pytest.raises(PermissionError, match="is not a directory of ours"):
        refresher.check_private_dir(tmp_path)


def test_refresher_closes_its_directory_to_others(tmp_path):
    d = tmp_path / "rt"
    d.mkdir(mode=0o755)
    refresher.check_private_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


# The Hub's refresh hook -----------------------------------------------------------------------


class FakeAuthenticator:
    def __init__(self, fail: Exception | None = None) -> None:
        import logging

        self.log = logging.getLogger("fake-authenticator")
        self.fail = fail
        self.refreshed_with: list[str] = []

    def build_refresh_token_request_params(self, refresh_token: str) -> dict[str, str]:
        return {"grant_type": "refresh_token", "refresh_token": refresh_token}

    async def get_token_info(self, handler: object, params: dict[str, str]) -> dict[str, Any]:
        if self.fail:
            raise self.fail
        self.refreshed_with.append(params["refresh_token"])
        return {"access_token": token(60), "token_type": "Bearer"}

    async def _token_to_auth_model(self, token_info: dict[str, Any]) -> dict[str, Any]:
        return {"name": "alice", "auth_state": dict(token_info)}


class User:
    name = "alice"


async def test_hook_keeps_a_token_far_from_expiry():
    auth = FakeAuthenticator()
    state = {"access_token": token(3600), "refresh_token": "r1"}
    assert await authhooks.RefreshAhead(margin=300)(auth, User(), state) is True
    assert auth.refreshed_with == []


async def test_hook_refreshes_ahead_of_expiry_and_keeps_the_refresh_token():
    auth = FakeAuthenticator()
    old = token(60, iat=time.time() - 40)
    model = await authhooks.RefreshAhead(margin=300)(
        auth, User(), {"access_token": old, "refresh_token": "r1"}
    )
    assert auth.refreshed_with == ["r1"]
    assert model["auth_state"]["refresh_token"] == "r1"
    assert expiry.seconds_left(model["auth_state"]["access_token"]) > expiry.seconds_left(old)


async def test_hook_asks_for_login_when_the_issuer_refuses_the_refresh():
    from tornado.httpclient import HTTPClientError

    auth = FakeAuthenticator(fail=HTTPClientError(400))
    state = {"access_token": token(60, iat=time.time() - 40), "refresh_token": "r1"}
    assert await authhooks.RefreshAhead()(auth, User(), state) is False


async def test_hook_keeps_a_still_valid_token_while_the_issuer_is_down():
    auth = FakeAuthenticator(fail=ConnectionRefusedError())
    state = {"access_token": token(60, iat=time.time() - 40), "refresh_token": "r1"}
    assert await authhooks.RefreshAhead()(auth, User(), state) is True


# The refresh-token vault ------------------------------------------------------------------------


async def test_vault_keeps_refresh_tokens_out_of_auth_state():
    from remote_jobqueue.spawner.vault import RefreshTokenVault

    vault = RefreshTokenVault()
    state = await vault.modify_auth_state(
        None,
        {
            "access_token": "a",
            "refresh_token": "r1",
            "token_response": {"access_token": "a", "refresh_token": "r1", "token_type": "Bearer"},
        },
    )
    assert "r1" not in json.dumps(state)
    assert state["token_response"]["token_type"] == "Bearer"
    assert await vault.get(state["refresh_handle"]) == "r1"


async def test_hook_refreshes_with_the_vaults_token_and_forgets_the_old_handle():
    from remote_jobqueue.spawner.vault import RefreshTokenVault

    vault = RefreshTokenVault()
    auth = FakeAuthenticator()
    handle = await vault.put("r1")
    old = token(60, iat=time.time() - 40)
    hook = authhooks.RefreshAhead(vault=vault)
    await hook(auth, User(), {"access_token": old, "refresh_handle": handle})
    assert auth.refreshed_with == ["r1"]
    assert await vault.get(handle) is None


async def test_vault_survives_a_hub_restart_encrypted(tmp_path, monkeypatch):
    from jupyterhub.crypto import CryptKeeper

    from remote_jobqueue.spawner.vault import RefreshTokenVault

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", os.urandom(32).hex())
    CryptKeeper.clear_instance()
    try:
        path = tmp_path / "vault"
        handle = await RefreshTokenVault(path).put("r-secret")
        assert b"r-secret" not in path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await RefreshTokenVault(path).get(handle) == "r-secret"
    finally:
        CryptKeeper.clear_instance()


def test_vault_is_shared_even_when_traitlets_deep_copies_the_config():
    import copy

    from remote_jobqueue.spawner.vault import RefreshTokenVault

    vault = RefreshTokenVault()
    hook = authhooks.RefreshAhead(vault=vault)
    assert copy.deepcopy(vault.modify_auth_state).__self__ is vault
    assert copy.deepcopy(hook).vault is vault


async def test_a_new_login_replaces_the_users_older_refresh_token_in_the_vault():
    from remote_jobqueue.spawner.vault import RefreshTokenVault

    vault = RefreshTokenVault()
    first = await vault.modify_auth_state(None, {"access_token": token(), "refresh_token": "r1"})
    second = await vault.modify_auth_state(None, {"access_token": token(), "refresh_token": "r2"})
    other = await vault.modify_auth_state(
        None, {"access_token": token(sub="bob"), "refresh_token": "rb"}
    )
    assert first["refresh_handle"] == second["refresh_handle"] != other["refresh_handle"]
    assert await vault.get(first["refresh_handle"]) == "r2"
    assert len(await vault._load()) == 2


async def test_refreshing_keeps_the_subjects_entry():
    from remote_jobqueue.spawner.vault import RefreshTokenVault

    vault = RefreshTokenVault()

    class VaultAuthenticator(FakeAuthenticator):
        async def _token_to_auth_model(self, token_info):
            return {"name": "alice", "auth_state": await vault.modify_auth_state(self, token_info)}

    state = await vault.modify_auth_state(
        None, {"access_token": token(60, iat=time.time() - 40), "refresh_token": "r1"}
    )
    model = await authhooks.RefreshAhead(vault=vault)(VaultAuthenticator(), User(), state)
    assert model["auth_state"]["refresh_handle"] == state["refresh_handle"]
    assert await vault.get(state["refresh_handle"]) == "r1"  # kept (the fake issuer has no new one)
