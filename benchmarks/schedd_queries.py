"""Schedd queries per second of idle clusters: what a site's HTCondor administrator sees.

Starts ``--clusters`` clusters at one site, each with one worker job (no resident worker, so the
bundle has a job to watch), waits until every worker has joined, then counts for ``--window``
seconds the status queries each bundle sent to the schedd (its tracker's counter, read through
the cluster's ``jobs()``) and those each client sent (its scheduler job's counter). Target: at
most 0.1 queries per second per cluster. The design before this one asked once a second per
cluster, by construction (its site agent reconciled against the schedd every second).

    python benchmarks/schedd_queries.py --site T2_LOCAL --clusters 10 --window 60
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _facility
from rich.console import Console
from rich.table import Table

TARGET = 0.1


async def counts(clusters) -> list[tuple[int, int]]:
    """(bundle queries, client queries) of every cluster, now."""
    reports = await asyncio.gather(*(c._jobs() for c in clusters))
    return [
        (int(r["schedd_queries"]), c.scheduler_job.queries)
        for r, c in zip(reports, clusters, strict=True)
    ]


async def measure(site: str, n: int, window: float) -> list[dict[str, float]]:
    from dask.distributed import Client

    from remote_jobqueue import RemoteHTCondorCluster

    def make():
        return RemoteHTCondorCluster(
            site=site,
            cores=1,
            memory="512 MiB",
            n_workers=1,
            resident_worker=False,
            # The scheduler of an idle cluster needs little: fit many at one site.
            job_extra_directives={"request_memory": "512"},
            asynchronous=True,
            quiet=True,
        )

    clusters = [make() for _ in range(n)]
    try:
        await asyncio.gather(*(c._start() for c in clusters))
        for cluster in clusters:
            async with Client(cluster, asynchronous=True) as client:
                await client.wait_for_workers(1, timeout=300)
        await asyncio.sleep(15)  # past the start: steady state
        before, started = await counts(clusters), time.monotonic()
        await asyncio.sleep(window)
        after, elapsed = await counts(clusters), time.monotonic() - started
    finally:
        await asyncio.gather(*(c._close() for c in clusters), return_exceptions=True)
    return [
        {
            "cluster": c.cluster_id,
            "bundle": (a[0] - b[0]) / elapsed,
            "client": (a[1] - b[1]) / elapsed,
        }
        for c, b, a in zip(clusters, before, after, strict=True)
    ]


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = range(len(rows))
    ax.bar(x, [r["bundle"] for r in rows], label="bundle (worker jobs)")
    ax.bar(x, [r["client"] for r in rows], bottom=[r["bundle"] for r in rows], label="client")
    ax.axhline(TARGET, color="red", linestyle="--", label=f"target {TARGET}/s")
    ax.axhline(1.0, color="grey", linestyle=":", label="previous design, 1/s")
    ax.set_xlabel("idle cluster")
    ax.set_ylabel("schedd queries per second")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="T2_LOCAL")
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--png", type=Path, default=Path("benchmarks/results/schedd_queries.png"))
    args = parser.parse_args()
    _facility.use_facility("alice")
    rows = asyncio.run(measure(args.site, args.clusters, args.window))
    table = Table(title=f"schedd queries/s, {args.clusters} idle clusters at {args.site}")
    for column in ("cluster", "bundle /s", "client /s", "total /s"):
        table.add_column(column, justify="right")
    for row in rows:
        total = row["bundle"] + row["client"]
        table.add_row(
            row["cluster"], f"{row['bundle']:.3f}", f"{row['client']:.3f}", f"{total:.3f}"
        )
    per_cluster = [r["bundle"] + r["client"] for r in rows]
    table.add_row("median", "", "", f"{_facility.median(per_cluster):.3f}")
    table.add_row("all clusters", "", "", f"{sum(per_cluster):.3f}")
    Console().print(table)
    print(f"target: <= {TARGET} per cluster; max seen {max(per_cluster):.3f}")
    plot(rows, args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
