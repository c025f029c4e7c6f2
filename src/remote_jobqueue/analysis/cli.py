"""What the example scripts share: where to run (``--site``/``--local-cluster``), what to report.

No cluster option means one local process without Dask, the reference the cluster runs must
agree with, bin for bin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .dimuon import Result, plot


def parser(description: str | None) -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=description)
    where = cli.add_mutually_exclusive_group()
    where.add_argument(
        "--site", help='run on a RemoteHTCondorCluster at this site (a catalogue name or "local")'
    )
    where.add_argument(
        "--local-cluster", action="store_true", help="run on a dask LocalCluster on this machine"
    )
    cli.add_argument("--workers", type=int, default=2, help="Dask workers (default: 2)")
    cli.add_argument("--files", type=int, default=None, help="only the first N dataset files")
    cli.add_argument("--png", type=Path, default=None, help="where to save the histogram")
    cli.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    return cli


@contextlib.contextmanager
def dask_client(args: argparse.Namespace) -> Iterator[Any]:
    """A Dask client with ``args.workers`` workers where ``args`` says, or ``None``."""
    from dask.distributed import Client, LocalCluster

    if not (args.site or args.local_cluster) and os.environ.get("DASK_SCHEDULER_ADDRESS"):
        # Started by `remote-jobqueue run`, next to its cluster's scheduler.
        with Client() as client:
            client.wait_for_workers(args.workers, timeout=300)
            yield client
        return
    if not (args.site or args.local_cluster):
        yield None
        return

    if args.site:
        from .. import RemoteHTCondorCluster

        cluster = RemoteHTCondorCluster(site=args.site, cores=1, n_workers=args.workers)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers, timeout=300)
        yield client


def describe(args: argparse.Namespace) -> str:
    if not (args.site or args.local_cluster) and os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return f"the run's cluster, {args.workers} worker(s)"
    if args.site:
        return f"site {args.site}, {args.workers} worker(s)"
    if args.local_cluster:
        return f"LocalCluster, {args.workers} worker(s)"
    return "one local process"


def report(result: Result, args: argparse.Namespace, default_png: str) -> None:
    """Print events processed and events/s, save the PNG, and the JSON if asked."""
    where = describe(args)
    print(f"{result.summary()} [{where}]")
    png = plot(result.counts, args.png or Path(default_png), f"{result.engine}, {where}")
    print(f"histogram saved to {png}")
    if args.json:
        args.json.write_text(json.dumps({**result.to_dict(), "where": where}))
