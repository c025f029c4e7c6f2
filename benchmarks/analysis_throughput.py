"""Events per second of the dimuon analysis: where it runs, and which way the data comes.

    python benchmarks/analysis_throughput.py --runs 5 --site T2_A

Scenarios (each in its own process, because the XRootD client reads its cache settings once,
when it loads; and ROOT's bundled XRootD client must not meet the Python bindings):

- one local process, reading through the hub cache, warm;
- a dask ``LocalCluster`` with 2 workers (warm hub cache);
- a ``RemoteHTCondorCluster`` at ``--site`` with 1 and with 2 workers (warm site cache);
- one local process reading straight from the origin (no proxy plugin);
- one local process through a cold cache: every run reads fresh file names (hard links made in
  the origin's export for that run), since the cache keys on the path and never revalidates.

Every scenario first runs once unmeasured (imports, ROOT's JIT, cluster start, filling the
cache), then ``--runs`` measured times; the table shows medians, the range, and the ratio to one
local process with a warm cache. Needs the facility up; run it as root under the facility lock.
Measured, not asserted: on a shared 2-core machine the numbers move with the neighbours' load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINES = ("uproot", "rdataframe")
PROXY_VARIABLES = ("XRD_PLUGINCONFDIR", "XROOT_PROXY")


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    #: ``None`` (no Dask), ``"local-cluster"`` or ``"site"`` (a RemoteHTCondorCluster).
    cluster: str | None = None
    workers: int = 1
    #: "warm" (through the cache, after a warm-up run), "cold" (fresh names) or "origin".
    data: str = "warm"


SCENARIOS = (
    Scenario("local", "one local process"),
    Scenario("local-cluster", "LocalCluster", "local-cluster", 2),
    Scenario("site-1", "RemoteHTCondorCluster", "site", 1),
    Scenario("site-2", "RemoteHTCondorCluster", "site", 2),
    Scenario("origin", "one local process", data="origin"),
    Scenario("cold", "one local process", data="cold"),
)
BY_KEY = {s.key: s for s in SCENARIOS}


# The measuring side: one scenario, one engine, in this process ---------------------------
def fresh_copies(urls: list[str]) -> tuple[list[str], Path]:
    """The same files under new names at the origin (hard links): a cold cache for them."""
    from rjq_facility import xrootd
    from rjq_facility.config import FacilityConfig

    data = xrootd.origin_data_dir(FacilityConfig())
    lfn_dir = f"/store/bench/{secrets.token_hex(6)}"
    directory = data / lfn_dir.lstrip("/")
    directory.mkdir(parents=True)
    names = []
    for url in urls:
        lfn = "/store/" + url.split("//store/", 1)[1]
        os.link(data / lfn.lstrip("/"), directory / Path(lfn).name)
        names.append(url.replace(lfn, f"{lfn_dir}/{Path(lfn).name}"))
    return names, directory


def forget_copies(directory: Path) -> None:
    """Remove the hard links, and what the hub cache kept of them."""
    from rjq_facility import xrootd
    from rjq_facility.config import FacilityConfig

    cache = xrootd.root_dir(FacilityConfig()) / "cache-hub" / "cache"
    for path in [directory, *cache.rglob(directory.name)]:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the empty /store/bench, for tidiness


@contextlib.contextmanager
def dask_client(scenario: Scenario, site: str) -> Iterator[Any]:
    if scenario.cluster is None:
        yield None
        return
    from dask.distributed import Client, LocalCluster

    if scenario.cluster == "site":
        from remote_jobqueue import RemoteHTCondorCluster

        cluster = RemoteHTCondorCluster(site=site, cores=1, n_workers=scenario.workers, quiet=True)
    else:
        cluster = LocalCluster(n_workers=scenario.workers, threads_per_worker=1, processes=True)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(scenario.workers, timeout=300)
        yield client


def measure(scenario: Scenario, engine: str, runs: int, files: int | None, site: str) -> None:
    """Print one JSON line per measured run."""
    if engine == "rdataframe":
        import ROOT  # first: see remote_jobqueue.analysis.with_rdataframe

        ROOT.gROOT.SetBatch(True)
        from remote_jobqueue.analysis import with_rdataframe as module
    else:
        from remote_jobqueue.analysis import with_uproot as module
    from remote_jobqueue.analysis import files as dataset_files

    urls = dataset_files.urls(limit=files)
    with dask_client(scenario, site) as client:
        module.run(urls, client)  # warm-up, not measured
        for _ in range(runs):
            if scenario.data == "cold":
                fresh, directory = fresh_copies(urls)
                try:
                    result = module.run(fresh, client)
                finally:
                    forget_copies(directory)
            else:
                result = module.run(urls, client)
            print("RESULT " + json.dumps({**result.to_dict(), "counts": None}), flush=True)


# The orchestrating side: every scenario in a child process, then table and plot ----------
def child_env(scenario: Scenario) -> dict[str, str]:
    from rjq_facility import lifecycle

    env = {**os.environ, **lifecycle.env(user="alice")}
    if scenario.data == "origin":
        for name in PROXY_VARIABLES:
            env.pop(name, None)
    return env


def run_scenario(scenario: Scenario, engine: str, args: argparse.Namespace) -> list[dict]:
    command = [sys.executable, __file__, "--measure", scenario.key, "--engine", engine]
    command += ["--runs", str(args.runs), "--site", args.site]
    command += ["--files", str(args.files)] if args.files else []
    proc = subprocess.run(
        command, env=child_env(scenario), capture_output=True, text=True, timeout=900
    )
    results = [
        json.loads(line.split(" ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if proc.returncode != 0 or not results:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"{engine} {scenario.key} failed ({proc.returncode}):\n{tail}")
    return results


def describe(scenario: Scenario, site: str) -> tuple[str, str, str]:
    where = scenario.label + (f" at {site}" if scenario.cluster == "site" else "")
    data = {"warm": "warm cache", "cold": "cold cache", "origin": "origin, no cache"}
    return where, str(scenario.workers), data[scenario.data]


def summarize(measured: dict[tuple[str, str], list[dict]], site: str) -> list[dict]:
    rows = []
    for (engine, key), results in measured.items():
        rates = [r["events_per_second"] for r in results]
        where, workers, data = describe(BY_KEY[key], site)
        rows.append(
            {
                "engine": engine,
                "scenario": key,
                "where": where,
                "workers": workers,
                "data": data,
                "runs": len(rates),
                "events": results[0]["events"],
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
            }
        )
    for row in rows:
        base = next(
            (r for r in rows if r["engine"] == row["engine"] and r["scenario"] == "local"), None
        )
        row["ratio"] = row["median"] / base["median"] if base else float("nan")
    return rows


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title="Dimuon analysis throughput (medians; ratio to one local process, warm)")
    for column in ("engine", "where", "workers", "data", "runs", "events"):
        out.add_column(column, justify="right" if column in ("runs", "events") else "left")
    out.add_column("median events/s", justify="right")
    out.add_column("range (min-max)", justify="right")
    out.add_column("ratio", justify="right")
    for r in rows:
        out.add_row(
            r["engine"],
            r["where"],
            r["workers"],
            r["data"],
            str(r["runs"]),
            f"{r['events']:,}",
            f"{r['median']:,.0f}",
            f"{r['min']:,.0f}-{r['max']:,.0f}",
            f"{r['ratio']:.2f}",
        )
    Console(width=160).print(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [s.key for s in SCENARIOS if any(r["scenario"] == s.key for r in rows)]
    engines = [e for e in ENGINES if any(r["engine"] == e for r in rows)]
    labels = [
        next(
            f"{r['where'].replace(' at ', chr(10) + 'at ')}\n{r['workers']} w, {r['data']}"
            for r in rows
            if r["scenario"] == k
        )
        for k in keys
    ]
    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        found = {r["scenario"]: r for r in rows if r["engine"] == engine}
        x = np.arange(len(keys)) + (i - (len(engines) - 1) / 2) * width
        med = [found[k]["median"] / 1e6 if k in found else 0 for k in keys]
        low = [(found[k]["median"] - found[k]["min"]) / 1e6 if k in found else 0 for k in keys]
        high = [(found[k]["max"] - found[k]["median"]) / 1e6 if k in found else 0 for k in keys]
        ax.bar(x, med, width, yerr=[low, high], capsize=3, label=engine)
    ax.set_xticks(np.arange(len(keys)), labels, fontsize=8)
    ax.set_ylabel("million events / s (median, min to max)")
    ax.set_title("Dimuon analysis throughput on the development facility")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--runs", type=int, default=5, help="measured runs per scenario")
    cli.add_argument("--site", default="T2_A", help="site of the RemoteHTCondorCluster runs")
    cli.add_argument("--files", type=int, default=None, help="only the first N dataset files")
    cli.add_argument("--engine", choices=(*ENGINES, "both"), default="both")
    cli.add_argument("--scenarios", default=",".join(BY_KEY), help="comma-separated subset")
    cli.add_argument("--out", type=Path, default=Path("analysis_throughput"), help="file stem")
    cli.add_argument("--measure", choices=list(BY_KEY), help=argparse.SUPPRESS)
    args = cli.parse_args(argv)
    if args.measure:
        measure(BY_KEY[args.measure], args.engine, args.runs, args.files, args.site)
        return 0

    engines = ENGINES if args.engine == "both" else (args.engine,)
    measured: dict[tuple[str, str], list[dict]] = {}
    for engine in engines:
        for key in args.scenarios.split(","):
            print(f"measuring {engine} / {key} …", file=sys.stderr, flush=True)
            measured[(engine, key)] = run_scenario(BY_KEY[key], engine, args)
    rows = summarize(measured, args.site)
    table(rows)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
