"""The scheduler's dashboard on a UNIX socket that only the bundle's user can open.

`distributed` serves the dashboard in plain HTTP on a TCP port, and a loopback port of an
execute node is open to every other job on that node (other users' included). A UNIX socket in
a 0700 directory is not: the bundle's forwarder (or, in local mode, the client's own-user port)
is the only way in. Tornado's server takes extra sockets at any time, so the TCP one is closed
and the UNIX one added (through its private socket table: it has no public "unlisten"), in
the scheduler's own ``start_http_server``: synchronously, before the event loop could accept a
single connection on the TCP port.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from tornado.netutil import bind_unix_socket

logger = logging.getLogger("remote_jobqueue.bundle")

#: Longest UNIX socket path the kernel takes (108 bytes with the terminating NUL).
_SUN_PATH_MAX = 107


def dashboard_socket_path(scratch: Path) -> Path:
    """``scratch/dashboard.sock``, or a private directory of its own if that is too long."""
    path = scratch / "dashboard.sock"
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="rjq-dash-")) / "dashboard.sock"


def move_dashboard_to_unix_socket(scheduler, path: Path) -> Path | None:
    """Serve ``scheduler``'s dashboard on ``path`` (mode 0600) instead of its TCP port."""
    server = getattr(scheduler, "http_server", None)
    if server is None:
        return None
    os.chmod(path.parent, 0o700)
    for fd, sock in list(server._sockets.items()):
        server._handlers.pop(fd)()
        sock.close()
        del server._sockets[fd]
    server.add_socket(bind_unix_socket(str(path), mode=0o600))
    logger.info("dashboard on %s (no TCP port)", path)
    return path


def scheduler_class(path: Path):
    """A `distributed.Scheduler` whose dashboard is only ever served on ``path``.

    Still named ``Scheduler``: its ``identity()["type"]`` is what clients and tools see."""
    import distributed

    class Scheduler(distributed.Scheduler):
        dashboard_socket: Path | None = None

        def start_http_server(self, *args, **kwargs):
            super().start_http_server(*args, **kwargs)
            self.dashboard_socket = move_dashboard_to_unix_socket(self, path)

    return Scheduler
