"""The gateway's host key, and how clients pin it: the key, never a host name, is trusted.

The gateway creates its key once and keeps it, so clients can pin it for good; clients accept
it as key text, ``known_hosts`` text or a file of either, and trust nothing else.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from ..tokens import write_private_file

log = logging.getLogger(__name__)

#: A pinned gateway key: key text, ``known_hosts`` text, a path to either, or key objects.
HostKeySpec = str | os.PathLike[str] | asyncssh.SSHKey | Sequence[asyncssh.SSHKey]


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


def load_host_keys(spec: HostKeySpec) -> list[asyncssh.SSHKey]:
    """Public keys to pin from key text, ``known_hosts`` text, a file of either, or key objects.

    Host names in ``known_hosts`` lines are ignored on purpose: the gateway is reached under
    different names (in-cluster service, public DNS), and what we trust is the key.
    """
    if isinstance(spec, asyncssh.SSHKey):
        return [spec.convert_to_public()]
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return [k.convert_to_public() for k in spec]
    text = str(spec)
    if isinstance(spec, os.PathLike) or ("\n" not in text and Path(text).is_file()):
        text = Path(text).read_text()
    keys: list[asyncssh.SSHKey] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        for candidate in (line, line.split(None, 1)[-1]):
            try:
                keys.append(asyncssh.import_public_key(candidate))
                break
            except (asyncssh.KeyImportError, ValueError):
                continue
    if not keys:
        raise ValueError("no SSH public key found in the gateway host key specification")
    return keys
