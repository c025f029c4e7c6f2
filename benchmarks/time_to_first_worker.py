"""Time to first worker: RemoteHTCondorCluster against dask_jobqueue.HTCondorCluster.

Both run their workers at the same site of the development pool; rounds alternate between them
so that both see the same pool. Measured: from constructing the cluster to
``client.wait_for_workers(1)`` returning, with one worker asked for in the constructor
(``n_workers=1``), as a user would write it. Between rounds every job of the cluster must have
left the queue, so each round starts on an idle pool.

    python benchmarks/time_to_first_worker.py --site T2_A --rounds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _facility
from rich.console import Console
from rich.table import Table


def time_remote(site: str) -> float:
    from dask.distributed import Client

    from remote_jobqueue import RemoteHTCondorCluster

    start = time.perf_counter()
    with (
        RemoteHTCondorCluster(site=site, cores=1, memory="1 GiB", n_workers=1, quiet=True) as cl,
        Client(cl) as client,
    ):
        client.wait_for_workers(1, timeout=300)
        return time.perf_counter() - start


def time_jobqueue(site: str, cfg, spool: bool = False) -> float:
    from dask.distributed import Client
    from dask_jobqueue import HTCondorCluster

    target = ["-name", cfg.schedd_name, "-pool", cfg.collector]
    # A client that shares no file system with the schedd must spool, as RemoteHTCondorCluster
    # always does; the plain variant enjoys the schedd's own file system.
    submit = [*target, "-spool"] if spool else target
    start = time.perf_counter()
    with (
        HTCondorCluster(
            cores=1,
            memory="1 GiB",
            disk="1 GiB",
            n_workers=1,
            python=sys.executable,
            # Workers at the site dial the scheduler on the hub side, as with any jobqueue pool.
            scheduler_options={"host": cfg.hub_address},
            job_extra_directives={"requirements": f'TARGET.SiteName == "{site}"'},
            submit_command_extra=submit,
            cancel_command_extra=target,
        ) as cl,
        Client(cl) as client,
    ):
        client.wait_for_workers(1, timeout=300)
        return time.perf_counter() - start


def wait_for_empty_queue(timeout: float = 60) -> None:
    from remote_jobqueue import schedd as sched
    from rjq_facility.config import FacilityConfig

    cfg = FacilityConfig()
    schedd = sched.locate(cfg.collector, cfg.schedd_name)
    deadline = time.monotonic() + timeout
    while sched.job_ads(schedd, "JobStatus == 1 || JobStatus == 2") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="T2_A")
    parser.add_argument("--rounds", type=int, default=5)
    default_plot = Path(__file__).parent / "results" / "time_to_first_worker.png"
    parser.add_argument("--output", type=Path, default=default_plot)
    args = parser.parse_args()

    cfg = _facility.use_facility()
    _facility.install_condor_commands(cfg)
    contenders: dict[str, Callable[[], float]] = {
        "remote-jobqueue RemoteHTCondorCluster": lambda: time_remote(args.site),
        "dask_jobqueue HTCondorCluster": lambda: time_jobqueue(args.site, cfg),
        "dask_jobqueue HTCondorCluster, spooled": lambda: time_jobqueue(args.site, cfg, True),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    console = Console()
    for round_ in range(1, args.rounds + 1):
        for name, run in contenders.items():
            wait_for_empty_queue()
            seconds = run()
            times[name].append(seconds)
            console.print(f"round {round_}: {name}: {seconds:.2f} s")

    ours, theirs, theirs_spooled = (times[name] for name in contenders)
    table = Table(title=f"Time to first worker at {args.site} ({args.rounds} rounds, alternating)")
    for column in ("cluster", "median s", "min s", "max s"):
        table.add_column(column, justify="left" if column == "cluster" else "right")
    for name, values in times.items():
        table.add_row(
            name,
            f"{_facility.median(values):.2f}",
            f"{min(values):.2f}",
            f"{max(values):.2f}",
        )
    console.print(table)
    for label, other in (("", theirs), (", spooled", theirs_spooled)):
        ratio = _facility.median(ours) / _facility.median(other)
        console.print(f"ratio remote-jobqueue / dask_jobqueue{label} (median): {ratio:.2f}")
    console.print(f"plot: {plot(times, args.site, args.output)}")


def plot(times: dict[str, list[float]], site: str, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    for row, values in enumerate(times.values()):
        ax.scatter(values, [row] * len(values), alpha=0.6)
        ax.plot([_facility.median(values)] * 2, [row - 0.3, row + 0.3], color="black")
    ax.set_yticks(range(len(times)), list(times))
    ax.set_xlabel("seconds from constructing the cluster to the first worker")
    ax.set_xlim(left=0)
    ax.set_title(f"Time to first worker at {site} (bar: median)")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    return output


if __name__ == "__main__":
    main()
