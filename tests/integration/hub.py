"""A real JupyterHub for the spawner tests: GenericOAuthenticator against the facility issuer.

The Hub runs as root in its own session (with configurable-http-proxy, the Python one), spawns
servers as host users with `LocalProcessRemoteSpawner`, and is stopped with everything it
started. Logins go through the issuer's real authorization-code flow and login form.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from rjq_facility import issuer, lifecycle, scitokens
from rjq_facility.config import FacilityConfig

#: Runtime directories of the test servers (parents must be traversable by the users).
RUNTIME_BASE = Path("/run/remote-jobqueue-test")
SERVICE = "rjq-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_host_user(name: str) -> pwd.struct_passwd:
    """The facility's users exist in the pool's images; servers run as host users too."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def grant_traverse(path: Path) -> list[tuple[Path, int]]:
    """Let other users traverse (not list) ``path``'s parents; returns what to restore.

    The test's Python may live under /root (pyenv), and the checkout in a ``mktemp -d``
    directory, both 0700: servers running as alice need to execute them.
    """
    changed = []
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode & 0o7777
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            changed.append((parent, mode))
    return changed


def hub_config(
    cfg: FacilityConfig,
    *,
    port: int,
    hub_port: int,
    proxy_port: int,
    service_token: str,
    workdir: Path,
    lifetime: int,
    margin: float,
) -> str:
    venv_bin = Path(sys.executable).parent
    scope = [
        "openid",
        "profile",
        "compute.create",
        "compute.read",
        "compute.modify",
        "compute.cancel",
        "storage.read:/",
    ]
    settings: dict[str, Any] = {
        "sites": lifecycle.site_catalogue(cfg),
        "collector": cfg.collector,
        "condor_ca_file": str(scitokens.ca_file(cfg)),
        "xrootd_cache": cfg.hub_cache_url,
        "xrootd_origin": cfg.origin_url,
        "refresh_margin": margin,
        "runtime_dir": f"{RUNTIME_BASE}/{{username}}",
        "default_site": "random",
    }
    return textwrap.dedent(f"""\
        from remote_jobqueue.spawner.authhooks import CUSTOM_SCOPES, RefreshAhead, USER_ROLE
        from remote_jobqueue.spawner.vault import RefreshTokenVault

        c = get_config()  # noqa: F821
        c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {hub_port}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
        c.ConfigurableHTTPProxy.command = [{str(venv_bin / "configurable-http-proxy")!r}]
        c.JupyterHub.db_url = "sqlite:///{workdir}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
        c.JupyterHub.pid_file = "{workdir}/jupyterhub.pid"
        c.JupyterHub.cleanup_servers = True
        c.JupyterHub.cleanup_proxy = True

        c.JupyterHub.authenticator_class = "generic-oauth"
        c.Authenticator.enable_auth_state = True
        c.Authenticator.allow_all = True
        c.Authenticator.auth_refresh_age = 10
        c.GenericOAuthenticator.client_id = {issuer.HUB_CLIENT!r}
        c.GenericOAuthenticator.client_secret = {issuer.client_secret(cfg)!r}
        c.GenericOAuthenticator.oauth_callback_url = "http://127.0.0.1:{port}/hub/oauth_callback"
        c.GenericOAuthenticator.authorize_url = "{cfg.issuer_url}/authorize"
        c.GenericOAuthenticator.token_url = "{cfg.issuer_url}/token"
        c.GenericOAuthenticator.userdata_url = "{cfg.issuer_url}/userinfo"
        c.GenericOAuthenticator.username_claim = "preferred_username"
        c.GenericOAuthenticator.scope = {scope!r}
        # Short-lived tokens, on login and on every refresh.
        c.GenericOAuthenticator.token_params = {{"expires_in": "{lifetime}"}}
        # Refresh tokens stay in the Hub: users can read their own auth_state.
        vault = RefreshTokenVault("{workdir}/refresh-tokens")
        c.GenericOAuthenticator.modify_auth_state_hook = vault.modify_auth_state
        c.GenericOAuthenticator.refresh_user_hook = RefreshAhead(
            margin={margin}, refresh_params={{"expires_in": "{lifetime}"}}, vault=vault
        )

        c.JupyterHub.spawner_class = "local-remote-jobqueue"
        c.Spawner.cmd = [{str(venv_bin / "jupyterhub-singleuser")!r}]
        c.Spawner.start_timeout = 90
        c.Spawner.http_timeout = 90
        for key, value in {settings!r}.items():
            setattr(c.LocalProcessRemoteSpawner, key, value)

        c.JupyterHub.custom_scopes = CUSTOM_SCOPES
        c.JupyterHub.services = [{{"name": "{SERVICE}", "api_token": {service_token!r}}}]
        c.JupyterHub.load_roles = [
            USER_ROLE,
            {{
                "name": "{SERVICE}",
                "scopes": ["admin:users", "admin:servers", "admin:server_state",
                           "admin:auth_state", "tokens"],
                "services": ["{SERVICE}"],
            }},
        ]
        """)


@dataclass
class Hub:
    cfg: FacilityConfig
    url: str
    workdir: Path
    service_token: str
    proc: subprocess.Popen | None = None
    restore: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"{self.url}/hub/api"

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.service_token}"}
        return requests.request(method, f"{self.api}{path}", headers=headers, timeout=30, **kw)

    def user(self, name: str) -> dict[str, Any]:
        r = self.call("GET", f"/users/{name}")
        r.raise_for_status()
        return r.json()

    # Lifecycle --------------------------------------------------------------------------
    def start(self, lifetime: int, margin: float, timeout: float = 60) -> None:
        port, hub_port, proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        (self.workdir / "jupyterhub_config.py").write_text(
            hub_config(
                self.cfg,
                port=port,
                hub_port=hub_port,
                proxy_port=proxy_port,
                service_token=self.service_token,
                workdir=self.workdir,
                lifetime=lifetime,
                margin=margin,
            )
        )
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
            "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
        }
        log = (self.workdir / "jupyterhub.log").open("w")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", "jupyterhub_config.py"],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.api}/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Hub did not start:\n" + self.log_tail())
            time.sleep(0.5)

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / "jupyterhub.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop servers, the Hub and its proxy; kill whatever is left of them."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for pid in leftover_pids(self.api):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    # Users ------------------------------------------------------------------------------
    def login(self, name: str) -> requests.Session:
        """The authorization-code flow: Hub → issuer login form → Hub callback, as a browser."""
        session = requests.Session()
        form = session.get(f"{self.url}/hub/oauth_login", timeout=30)
        form.raise_for_status()
        assert "<form" in form.text and form.url.startswith(self.cfg.issuer_url), form.url
        hidden = {
            html.unescape(k): html.unescape(v)
            for k, v in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.text
            )
        }
        done = session.post(
            form.url,
            data={**hidden, "username": name, "password": issuer.user_password(self.cfg, name)},
            timeout=60,
        )
        assert done.url.startswith(self.url), done.url
        assert any(c.name.startswith("jupyterhub-session") for c in session.cookies)
        return session

    def spawn(self, name: str, timeout: float = 90) -> dict[str, Any]:
        r = self.call("POST", f"/users/{name}/server")
        assert r.status_code in (201, 202, 400), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.user(name).get("servers", {}).get("")
            if server and server.get("ready"):
                return server
            time.sleep(0.5)
        raise AssertionError(f"{name}'s server is not ready:\n{self.log_tail()}")


def leftover_pids(api_url: str) -> list[int]:
    """Processes started for this Hub (servers, refreshers) that are still alive."""
    needle = f"JUPYTERHUB_API_URL={api_url}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def process_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def cleanup_runtime() -> None:
    shutil.rmtree(RUNTIME_BASE, ignore_errors=True)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:2000]


#: What a terminal prints besides text: colours, cursor moves, titles.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")


class LabTerminal:
    """A JupyterLab terminal of a user's server, driven as the lab's page drives it: the
    REST API makes and deletes it, its websocket carries keystrokes and output. The token
    goes in a header, never in the URL."""

    def __init__(self, hub: Hub, user: str, token: str) -> None:
        self.base = f"{hub.url}/user/{user}"
        self.headers = {"Authorization": f"token {token}"}
        self.name: str | None = None
        self.output = ""
        self._ws: Any = None

    async def __aenter__(self) -> LabTerminal:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        r = requests.post(f"{self.base}/api/terminals", headers=self.headers, timeout=30)
        r.raise_for_status()
        self.name = r.json()["name"]
        url = f"{self.base.replace('http', 'ws', 1)}/terminals/websocket/{self.name}"
        self._ws = await websocket_connect(HTTPRequest(url, headers=self.headers))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def type(self, line: str) -> None:
        await self._ws.write_message(json.dumps(["stdin", line + "\r"]))

    async def read_until(self, pattern: str, timeout: float, unless: str = "") -> re.Match:
        """Read output until ``pattern`` (a regex) matches it; the match. Output matching
        ``unless`` first fails at once."""
        import asyncio

        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.output)):
            if unless and re.search(unless, self.output):
                raise AssertionError(f"{unless!r} in the terminal:\n{self.output[-3000:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} in the terminal:\n{self.output[-3000:]}")
            try:
                message = await asyncio.wait_for(self._ws.read_message(), left)
            except TimeoutError:
                continue
            if message is None:
                raise AssertionError(f"the terminal closed:\n{self.output[-3000:]}")
            kind, *payload = json.loads(message)
            if kind == "stdout":
                self.output += _ANSI.sub("", payload[0])
        return found

    async def close(self) -> None:
        """Close the terminal as the lab's "shut down" does: its processes get SIGHUP."""
        if self.name is None:
            return
        self._ws.close()
        r = requests.delete(
            f"{self.base}/api/terminals/{self.name}", headers=self.headers, timeout=30
        )
        assert r.status_code in (204, 404), r.text
        self.name = None
