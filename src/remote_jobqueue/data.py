"""Client-side data access: send every ``root://`` open to the nearest XRootD cache.

The XRootD client's proxy plugin (``XrdClProxyPlugin``) rewrites ``root://origin//store/f`` to
``root://cache//root://origin//store/f`` when ``XROOT_PROXY`` names a cache. It is enabled by a
plugin conf dir (``XRD_PLUGINCONFDIR``), not ``XRD_PLUGIN``, which would also capture ``file://``
and break local reads. The same environment goes to the notebook and into every job, so users
write origin URLs (or ``/store`` names) and read through whatever cache is nearest.

The client reads this environment when its library loads: set it before importing ``XRootD`` (or
``uproot`` opening ``root://``), e.g. in a subprocess, as the ``probe`` command is meant to run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .storage_auth import (
    CA_VARIABLE,
    JOB_CA_DIR,
    ca_to_environment,
    refusals_explained,
    use_storage_ca,
)

logger = logging.getLogger(__name__)

PLUGIN_CONF = "proxy.conf"


def write_proxy_plugin_conf(directory: Path) -> Path:
    """Write the proxy plugin's conf into ``directory``; return it (``XRD_PLUGINCONFDIR``).

    The library name is unversioned on purpose: the client appends its own major version, and an
    absolute ``-5.so`` path makes a 6.x client skip the cache without a word.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PLUGIN_CONF).write_text(
        "url = root://*;xroot://*\nlib = libXrdClProxyPlugin.so\nenable = true\n"
    )
    return directory


def _host_port(url: str) -> str:
    """``root://host:port//path`` / ``root://host:port`` / ``host:port`` -> ``host:port``."""
    rest = url.split("://", 1)[1] if "://" in url else url
    host = rest.split("/", 1)[0]
    if not host:
        raise ValueError(f"no host in XRootD URL {url!r}")
    return host


def proxy_prefix(cache: str) -> str:
    """``XROOT_PROXY`` for a cache, or for a chain of caches nearest first.

    A chain (``root://site:1095//root://regional:1095``) is a cache hierarchy: the proxy plugin
    puts the whole prefix in front of the origin URL, and each cache forwards what follows its
    own address, so the site cache reads through the regional one, which reads the origin.
    """
    hops = re.findall(r"(x?roots?)://([^/]+)", cache) or [("root", _host_port(cache))]
    return "".join(f"{scheme}://{hop}//" for scheme, hop in hops)


def cache_environment(
    cache_url: str,
    plugin_dir: Path,
    *,
    connection_retry: int = 2,
    connection_window: int = 5,
    request_timeout: int = 120,
) -> dict[str, str]:
    """Environment that routes XRootD reads through ``cache_url`` (a cache, or a chain of them:
    :func:`proxy_prefix`), failing fast if it is down.

    The client defaults (5 retries in 120 s windows) make a dead server look like a hang of ten
    minutes; these fail within about ``connection_retry * connection_window`` seconds.
    """
    return {
        "XRD_PLUGINCONFDIR": str(plugin_dir),
        "XROOT_PROXY": proxy_prefix(cache_url),
        "XRD_CONNECTIONRETRY": str(connection_retry),
        "XRD_CONNECTIONWINDOW": str(connection_window),
        "XRD_REQUESTTIMEOUT": str(request_timeout),
        # Debian's 5.5.3 xrdcp cannot copy through the proxy plugin with paged reads.
        "XRD_CPUSEPGWRTRD": "0",
    }


#: In jobs: the cache of the job's site, from the site catalogue. The job writes the plugin conf
#: itself (:func:`use_nearest_cache`), so no path of the client's machine must exist at the site.
CACHE_VARIABLE = "RJQ_XROOTD_CACHE"
#: Where a job keeps that conf, under its scratch directory.
JOB_PLUGIN_DIR = ".xrootd-plugins"


def job_environment(cache_url: str | None, ca_pem: str | None = None) -> dict[str, str]:
    """What a job at a site gets: the site's cache (if any) and the fail-fast timeouts, and
    the storage's CA (if its reads need a token: :mod:`remote_jobqueue.storage_auth`)."""
    env: dict[str, str] = {}
    if cache_url:
        settings = cache_environment(cache_url, Path(JOB_PLUGIN_DIR))
        for written_by_the_job in ("XRD_PLUGINCONFDIR", "XROOT_PROXY"):
            del settings[written_by_the_job]
        env = {CACHE_VARIABLE: cache_url, **settings}
    if ca_pem:
        env[CA_VARIABLE] = ca_to_environment(ca_pem)
    return env


#: The bearer token a job was given (the scheduler job's and each worker job's input file).
JOB_TOKEN_FILE = "bearer-token"
#: The variables that make a worker load this module first (``--preload``).
PRELOAD_VARIABLES = (CACHE_VARIABLE, CA_VARIABLE)


def use_nearest_cache(directory: Path | None = None, environ=os.environ) -> str | None:
    """In a job: send this process's (and its children's) XRootD opens to ``$RJQ_XROOTD_CACHE``,
    trust the storage's CA (``$RJQ_XROOTD_CA``), and read with the job's own bearer token.

    Writes the plugin conf into ``directory`` (default: the job's scratch directory) and sets
    the client's variables. Call it before the XRootD client loads: it reads them only once.
    Returns the cache, or ``None`` if the job was given none.
    """
    scratch = Path(environ.get("_CONDOR_SCRATCH_DIR") or os.getcwd())
    use_storage_ca(scratch / JOB_CA_DIR, environ)
    token = scratch / JOB_TOKEN_FILE
    if not environ.get("BEARER_TOKEN_FILE") and token.is_file():
        token.chmod(0o600)  # the XRootD client and WLCG discovery take nothing wider
        environ["BEARER_TOKEN_FILE"] = str(token)
    cache = environ.get(CACHE_VARIABLE)
    if not cache:
        return None
    plugin_dir = write_proxy_plugin_conf(directory or scratch / JOB_PLUGIN_DIR)
    environ.update(cache_environment(cache, plugin_dir))
    return cache


#: How often a worker asks its scheduler for a bearer token newer than its own (seconds).
TOKEN_FOLLOW_INTERVAL = 60.0
#: The worker's periodic callback that does it.
TOKEN_FOLLOW_CALLBACK = "rjq-bearer-token"


def dask_setup(worker: object = None) -> None:
    """Dask preload hook: workers start with ``--preload remote_jobqueue.data``."""
    use_nearest_cache()
    token = os.environ.get("BEARER_TOKEN_FILE")
    scratch = Path(os.environ.get("_CONDOR_SCRATCH_DIR") or os.getcwd())
    if worker is not None and token and Path(token) == scratch / JOB_TOKEN_FILE:
        follow_scheduler_token(worker, Path(token))


def follow_scheduler_token(worker: Any, path: Path, interval: float = TOKEN_FOLLOW_INTERVAL):
    """Keep a worker job's token file as fresh as its scheduler job's, which the client (or a
    detached run's refresh token) renews: the job's own copy is the one of its submission,
    and a worker that outlives it could open no new file of token-protected storage."""
    from tornado.ioloop import PeriodicCallback

    from .tokens import TokenError, token_claims_unverified, write_token_file

    async def refresh() -> None:
        try:
            exp = float(token_claims_unverified(path.read_text().strip()).get("exp", 0))
        except (OSError, TokenError, ValueError):
            exp = 0.0
        try:
            token = await worker.scheduler.rjq_bearer_token(newer_than=exp)
        except Exception as err:  # an older bundle, a scheduler going away: try again later
            logger.debug("no newer bearer token from the scheduler: %s", type(err).__name__)
            return
        if token:
            write_token_file(path, token)
            logger.info("bearer token for storage reads renewed from the scheduler")

    callback = PeriodicCallback(refresh, interval * 1000)
    worker.periodic_callbacks[TOKEN_FOLLOW_CALLBACK] = callback
    # Once at start too: a job that waited in the queue may have brought an expired copy.
    with contextlib.suppress(RuntimeError):  # no running loop: the callback will do
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(refresh()))
    return callback


def to_url(lfn_or_url: str, origin: str) -> str:
    """A logical file name ``/store/...`` as a URL at ``origin``; URLs are returned unchanged.

    Users name files by their LFN; the origin URL is what the proxy plugin redirects to a cache.
    """
    if "://" in lfn_or_url:
        return lfn_or_url
    if not lfn_or_url.startswith("/"):
        raise ValueError(f"not a URL nor an absolute logical file name: {lfn_or_url!r}")
    return f"root://{_host_port(origin)}//{lfn_or_url.lstrip('/')}"


def data_server(url: str) -> str:
    """The server that actually served an open of ``url`` (a cache, if the plugin is active).

    Returned as ``root://host:port``, comparable with the facility's cache and origin URLs.
    """
    from XRootD import client

    handle = client.File()
    status, _ = handle.open(url)
    if not status.ok:
        raise OSError(f"cannot open {url}: {status.message}")
    try:
        server = handle.get_property("DataServer")
    finally:
        handle.close()
    if isinstance(server, tuple):  # some client versions return (found, value)
        server = server[1] if server[0] else None
    if not server:
        raise OSError(f"opened {url} but the client reports no DataServer")
    return server if "://" in server else f"root://{server}"


def probe(url: str, tree: str = "Events") -> dict[str, object]:
    """Open ``url`` through XRootD: who served it, and how many events uproot reads from it."""
    import uproot

    server = data_server(url)
    with uproot.open(url) as handle:
        events = len(handle[tree].arrays(["event"], library="np")["event"])
    return {"url": url, "data_server": server, "events": events}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote_jobqueue.data")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("probe", help="read a file and print which server served it")
    cmd.add_argument("url", help="root:// URL, or a /store LFN together with --origin")
    cmd.add_argument(
        "--origin",
        default=os.environ.get("RJQ_XROOTD_ORIGIN"),
        help="host:port or root:// URL LFNs are resolved at (default: $RJQ_XROOTD_ORIGIN)",
    )
    cmd.add_argument("--tree", default="Events")
    args = parser.parse_args(argv)
    if "://" not in args.url and not args.origin:
        parser.error("a /store name needs --origin (or RJQ_XROOTD_ORIGIN)")
    url = to_url(args.url, args.origin or "")
    try:
        with refusals_explained(url):
            result = probe(url, args.tree)
    except Exception as err:
        print(json.dumps({"url": url, "error": f"{type(err).__name__}: {err}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
