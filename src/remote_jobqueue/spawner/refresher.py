"""Keep a server's token file fresh: ``python -m remote_jobqueue.spawner.refresher -- CMD``.

As a launcher (``-- CMD``) it makes sure the runtime directory is private, writes the first
token (pulled from the Hub) and the XRootD plugin conf, starts itself again as a watcher in the
background, and then *execs* CMD, so the server keeps the pid the spawner knows. The watcher
pulls the user's auth_state from the Hub API (``GET $JUPYTERHUB_API_URL/users/<name>``, allowed
by the server token's ``admin:auth_state!user`` scope) shortly before the token expires, and
atomically replaces the file with a newer token; the Hub refreshes it with the issuer (see
`remote_jobqueue.spawner.authhooks.RefreshAhead`). It exits when the server does.

Nothing secret is ever logged: tokens appear only as `remote_jobqueue.tokens.redact` prints.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..tokens import TokenError, redact, write_token_file
from .expiry import lifetime_and_expiry, window

log = logging.getLogger("remote_jobqueue.spawner.refresher")

#: Seconds between attempts while the Hub has no newer token (or does not answer).
RETRY_INTERVAL = 5.0
#: Never sleep longer than this between checks (a clock jump, a token replaced by hand).
MAX_SLEEP = 300.0


class HubError(RuntimeError):
    """The Hub did not give us a token; the message says why (never contains one)."""


def fetch_access_token(environ: Mapping[str, str] = os.environ, timeout: float = 10.0) -> str:
    """The user's current access token, from their auth_state at the Hub."""
    try:
        api_url = environ["JUPYTERHUB_API_URL"].rstrip("/")
        api_token = environ["JUPYTERHUB_API_TOKEN"]
        user = environ["JUPYTERHUB_USER"]
    except KeyError as err:
        raise HubError(f"{err.args[0]} is not set: not started by JupyterHub?") from None
    request = urllib.request.Request(
        f"{api_url}/users/{urllib.parse.quote(user, safe='')}",
        headers={"Authorization": f"token {api_token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            model = json.load(response)
    except urllib.error.HTTPError as err:
        err.close()
        raise HubError(f"the Hub API answered {err.code} for user {user}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise HubError(f"cannot reach the Hub API at {api_url}: {err}") from None
    auth_state = model.get("auth_state")
    if not isinstance(auth_state, dict):
        raise HubError(
            "the Hub returned no auth_state: enable_auth_state, and give the server token the "
            "scope admin:auth_state!user (server_token_scopes and a role for users)"
        )
    token = auth_state.get("access_token")
    if not isinstance(token, str) or not token:
        raise HubError("the user's auth_state holds no access_token")
    return token


def check_private_dir(path: Path) -> None:
    """Create ``path`` 0700, or accept it only if it is ours and closed to others."""
    path.mkdir(parents=True, mode=0o700, exist_ok=True)
    st = path.lstat()
    if path.is_symlink() or st.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not a directory of ours: refusing to put a token there")
    if st.st_mode & 0o077:
        path.chmod(0o700)


def _current_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _expiry(token: str | None) -> float:
    try:
        return lifetime_and_expiry(token)[1] if token else 0.0
    except TokenError:
        return 0.0


def update_once(token_file: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """Pull the token from the Hub; write it if it is newer than the file's. True if written."""
    new = fetch_access_token(environ)
    old = _current_token(token_file)
    if new == old or _expiry(new) <= _expiry(old):
        return False
    write_token_file(token_file, new)
    log.info("token file updated: %s (expires in %.0f s)", redact(new), _expiry(new) - time.time())
    return True


def seconds_until_due(token: str | None, margin: float, now: float) -> float:
    """Seconds until ``token`` enters its renewal window (0: now; unreadable tokens are due)."""
    if not token:
        return 0.0
    try:
        lifetime, exp = lifetime_and_expiry(token)
    except TokenError:
        return 0.0
    return min(MAX_SLEEP, max(0.0, exp - window(lifetime, margin) - now))


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the server goes (the pid poll below is the fallback)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def watch(server_pid: int, token_file: Path, margin: float) -> int:
    """Refresh until the server ``server_pid`` (our parent) exits."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("refreshing %s for server pid %d (margin %.0f s)", token_file, server_pid, margin)
    while os.getppid() == server_pid:
        sleep = seconds_until_due(_current_token(token_file), margin, time.time())
        if sleep == 0:
            try:
                updated = update_once(token_file)
            except HubError as err:
                log.warning("no new token yet: %s", err)
                updated = False
            # A token the Hub has not renewed yet: ask again soon, not in a busy loop.
            sleep = 0.0 if updated else RETRY_INTERVAL
        deadline = time.monotonic() + sleep
        while time.monotonic() < deadline and os.getppid() == server_pid:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    log.info("server %d is gone: refresher exits", server_pid)
    return 0


def launch(cmd: Sequence[str], environ: Mapping[str, str] = os.environ) -> None:
    """Prepare files, start the watcher, exec ``cmd`` (does not return)."""
    token_file = Path(environ["BEARER_TOKEN_FILE"])
    check_private_dir(token_file.parent)
    try:
        update_once(token_file, environ)
    except HubError as err:
        if _current_token(token_file) is None:
            log.error("starting without a token: %s", err)
        else:
            log.warning("keeping the token the spawner wrote: %s", err)
    if plugin_dir := environ.get("XRD_PLUGINCONFDIR"):
        from ..data import write_proxy_plugin_conf

        write_proxy_plugin_conf(Path(plugin_dir))
    margin = environ.get("RJQ_TOKEN_REFRESH_MARGIN", "300")
    subprocess.Popen(
        [sys.executable, "-m", __spec__.name, "--watch", str(os.getpid()), "--margin", margin],
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )
    os.execvp(cmd[0], list(cmd))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote_jobqueue.spawner.refresher")
    parser.add_argument("--watch", type=int, metavar="PID", help="refresh for server PID")
    parser.add_argument("--margin", type=float, default=300.0)
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the single-user command")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname).1s %(asctime)s rjq-refresher] %(message)s"
    )
    token_file = os.environ.get("BEARER_TOKEN_FILE")
    if not token_file:
        parser.error("BEARER_TOKEN_FILE is not set")
    if args.watch:
        return watch(args.watch, Path(token_file), args.margin)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the single-user command after --")
    launch(cmd)
    return 1  # not reached: launch execs


if __name__ == "__main__":
    sys.exit(main())
