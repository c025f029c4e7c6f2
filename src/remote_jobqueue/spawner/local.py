"""`LocalProcessRemoteSpawner`: single-user servers as local processes of the user's account.

The Hub (root) prepares the user's private runtime directory and writes the first token itself,
owned by the user, before the server starts: the server has a valid token from its first second
even if the Hub API is slow; the refresher keeps it fresh afterwards.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner

from ..tokens import write_token_file
from .mixin import RemoteJobqueueSpawnerMixin


def prepare_private_dir(path: Path, uid: int, gid: int) -> None:
    """``path`` as a directory owned by ``uid``, mode 0700; parents root's and traversable.

    An existing directory owned by someone else is refused rather than fixed: somebody else
    made it, maybe to read the user's token.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        path.mkdir(mode=0o700)
        os.chown(path, uid, gid)
    except FileExistsError:
        st = path.lstat()
        if not path.is_dir() or path.is_symlink() or st.st_uid != uid:
            raise PermissionError(f"{path} exists, not a directory owned by uid {uid}") from None
    path.chmod(0o700)


#: What a login shell of a Debian user gets.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def server_path(cmd: list[str] | None) -> str:
    """The PATH of a server (and so of its kernels): the directory of its single-user command
    first, where `remote-jobqueue` and `jupyter` are installed beside it, then the system's.
    JupyterHub (5 and later) passes no PATH of its own (`env_keep`), so without this
    ``!remote-jobqueue ...`` in a notebook would not find the lab environment's commands.
    (Terminals are login shells: `/etc/profile` sets theirs.) A relative command falls back
    to the refresher's interpreter's directory, the same environment."""
    cmd = list(cmd or [])
    if "--" in cmd:  # wrapped in the refresher: the server's command comes after it
        wrapper, cmd = cmd[: cmd.index("--")], cmd[cmd.index("--") + 1 :]
        if not (cmd and os.path.isabs(cmd[0])):
            cmd = wrapper
    if cmd and os.path.isabs(cmd[0]):
        return f"{os.path.dirname(cmd[0])}:{SYSTEM_PATH}"
    return SYSTEM_PATH


class LocalProcessRemoteSpawner(RemoteJobqueueSpawnerMixin, LocalProcessSpawner):
    """`LocalProcessSpawner` with remote-jobqueue's token file, refresher and settings."""

    _access_token: str | None = None

    async def run_auth_state_hook(self, auth_state: dict[str, Any] | None) -> None:
        # Kept in memory only, to seed the token file at start.
        self._access_token = (auth_state or {}).get("access_token")
        await super().run_auth_state_hook(auth_state)

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env.setdefault("PATH", server_path(self.cmd))  # an operator's env_keep/environment wins
        return env

    async def start(self) -> Any:
        user = pwd.getpwnam(self.user.name)
        settings = self.remote_jobqueue_settings()
        prepare_private_dir(Path(settings.runtime_dir), user.pw_uid, user.pw_gid)
        if self._access_token:
            write_token_file(
                settings.token_file, self._access_token, uid=user.pw_uid, gid=user.pw_gid
            )
            self._access_token = None
        else:
            self.log.warning(
                "no access token in %s's auth_state (enable_auth_state?): the refresher will "
                "try the Hub API",
                self.user.name,
            )
        return await super().start()
