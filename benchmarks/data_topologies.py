"""Events/s and bytes over the WAN of both analyses at a site, for each way the data can come.

    python benchmarks/data_topologies.py --runs 5 --site T2_A --workers 1,2

The WAN (`rjq_facility.wan`, on for the run, off after): the origin's link at 200 Mbit/s and
the site's downlink at 1 Gbit/s. That is a Tier-2's share of a national network scaled to this
machine: a real Tier-2 has 10-100 Gb/s and thousands of cores; here two cores decompress
~3 M dimuon events/s, so 200 Mbit/s (25 MB/s, 0.5 M dimuon events/s) puts the origin's link
where it is at a real site, slower than the CPUs. No latency: netem is not in this kernel.

Rows, each for the dimuon analysis (uproot, 1 M events, 6 muon branches) and the ttbar one
(coffea, 180 k events, electron, muon and jet branches), with ``--workers`` workers each:

- ``origin``: the workers read the origin directly;
- ``near-site``: through the site's cache, cold (files it never saw), then warm (the same files
  again);
- ``hierarchical``: the site's cache cold, reading through the hub's regional cache, which is
  warm (the files were read through it just before);
- each cache row twice: the site cache prefetching whole files (XCache's default) and lazy
  (``pfc.prefetch 0``, only the blocks asked for).

One cluster per worker count serves every row: its workers get no cache (the site's catalogue
entry says ``cache: null``) and open the URL the proxy plugin would have made for the topology
(``root://site-cache//root://origin//store/f``). Rounds alternate: each runs every row once, the
site cache switching between prefetch and lazy (a restart, with empty storage) twice per round.
"Cold" files are hard links under fresh names at the origin (a cache keys on the path); each
round's are removed from the origin and the caches afterwards. Bytes over the WAN are the
links' interface counters before and after each run. Needs the facility; run it as root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

ANALYSES = ("dimuon", "ttbar")


@dataclass(frozen=True)
class Row:
    key: str
    topology: str
    data: str
    lazy: bool = False

    @property
    def site_cache(self) -> str:
        if self.topology == "origin":
            return "-"
        return "lazy" if self.lazy else "prefetch"


ROWS = (
    Row("origin", "origin", "no cache"),
    Row("near-cold", "near-site", "cold"),
    Row("near-warm", "near-site", "warm"),
    Row("hier", "hierarchical", "site cold, regional warm"),
    Row("near-cold-lazy", "near-site", "cold", lazy=True),
    Row("near-warm-lazy", "near-site", "warm", lazy=True),
    Row("hier-lazy", "hierarchical", "site cold, regional warm", lazy=True),
)


# Files -------------------------------------------------------------------------------------
def dataset(analysis: str) -> dict[str, list[str]]:
    """Origin URLs per sample (the dimuon has one)."""
    from remote_jobqueue.analysis import files, ttbar

    if analysis == "dimuon":
        return {"dimuon": files.urls()}
    return {s: files.urls(files.list_lfns(ttbar.sample_dir(s))) for s in ttbar.SAMPLES}


class FreshNames:
    """The same files under a new directory of the origin (hard links): cold for every cache."""

    def __init__(self, cfg: Any) -> None:
        from rjq_facility import xrootd

        self.cfg = cfg
        self.data = xrootd.origin_data_dir(cfg)
        self.made: list[Path] = []

    def of(self, urls: dict[str, list[str]]) -> dict[str, list[str]]:
        lfn_dir = f"/store/bench/{secrets.token_hex(6)}"
        self.made.append(self.data / lfn_dir.lstrip("/"))
        fresh = {}
        for sample, sample_urls in urls.items():
            fresh[sample] = []
            for url in sample_urls:
                lfn = "/store/" + url.split("//store/", 1)[1]
                new = f"{lfn_dir}/{lfn.removeprefix('/store/')}"
                (self.data / new.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                os.link(self.data / lfn.lstrip("/"), self.data / new.lstrip("/"))
                fresh[sample].append(url.replace(lfn, new))
        return fresh

    def forget(self) -> None:
        """Remove the links, and whatever each cache kept of them."""
        from rjq_facility import xrootd

        caches = [s.data_dir for s in xrootd.servers(self.cfg) if s.origin is not None]
        for directory in self.made:
            for path in [directory, *(p for c in caches for p in c.rglob(directory.name))]:
                shutil.rmtree(path, ignore_errors=True)
        self.made.clear()
        with contextlib.suppress(OSError):
            (self.data / "store" / "bench").rmdir()  # empty now


def read_through(prefix: str, urls: dict[str, list[str]]) -> None:
    """Read every file whole through ``prefix`` (a cache): afterwards that cache is warm."""
    from XRootD import client

    for url in (u for sample in urls.values() for u in sample):
        handle = client.File()
        status, _ = handle.open(prefix + url)
        if not status.ok:
            raise OSError(f"warming {prefix + url}: {status.message}")
        offset = 0
        while True:
            status, chunk = handle.read(offset, 8 << 20)
            if not status.ok:
                raise OSError(f"warming {prefix + url}: {status.message}")
            if not chunk:
                break
            offset += len(chunk)
        handle.close()


# Runs --------------------------------------------------------------------------------------
def run_analysis(analysis: str, urls: dict[str, list[str]], client: Any) -> tuple[int, float]:
    """(events, seconds) of one run on ``client``'s cluster."""
    if analysis == "dimuon":
        from remote_jobqueue.analysis import with_uproot

        result = with_uproot.run(urls["dimuon"], client)
        return result.events, result.seconds
    from remote_jobqueue.analysis import ttbar

    outcome = ttbar.run(urls, client)
    return sum(outcome.events.values()), outcome.seconds


@contextlib.contextmanager
def site_client(site: str, workers: int) -> Iterator[Any]:
    """A cluster at ``site`` whose workers read exactly the URLs they are given."""
    import dask.config
    from dask.distributed import Client

    from remote_jobqueue import RemoteHTCondorCluster

    with dask.config.set({f"remote-jobqueue.sites.{site}.cache": None}):
        cluster = RemoteHTCondorCluster(site=site, cores=1, n_workers=workers, quiet=True)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(workers, timeout=300)
        yield client


def measure(args: argparse.Namespace, results: list[dict]) -> None:
    """Fill ``results`` (the caller keeps what was measured if a run fails)."""
    from _facility import use_facility

    from rjq_facility import data_paths, lifecycle

    cfg = use_facility()
    # This process and the workers open explicit URLs: no proxy plugin may prefix them again.
    for name in ("XRD_PLUGINCONFDIR", "XROOT_PROXY"):
        os.environ.pop(name, None)
    site = cfg.site(args.site)
    if not site.own_cache:
        raise SystemExit(f"{site.name} has no cache of its own: pick a site that has (T2_A)")
    before = data_paths.load(cfg)
    quiet = lambda *_: None  # noqa: E731
    fresh = FreshNames(cfg)
    try:
        rates = {"origin_rate": args.origin_rate, "site_rate": args.site_rate}
        lifecycle.set_data_paths(cfg, log=quiet, wan=True, lazy=(), **rates)
        bench = Bench(cfg, site.name, {a: dataset(a) for a in args.analyses}, fresh)
        for workers in args.workers:
            with site_client(site.name, workers) as client:
                for round_ in range(args.runs):
                    for lazy in (False, True):
                        lazy_caches = (f"cache-{site.name}",) if lazy else ()
                        lifecycle.set_data_paths(cfg, log=quiet, lazy=lazy_caches)
                        fresh_workers(client, workers, bench)
                        for row in (r for r in ROWS if r.lazy == lazy):
                            for analysis in args.analyses:
                                found = bench.run(row, analysis, client)
                                results.append({**found, "workers": workers, "round": round_})
                                print("RESULT " + json.dumps(results[-1]), flush=True)
                        fresh.forget()
    finally:
        try:  # the facility as it was, first: shaped links must not outlive the benchmark
            restore = {k: getattr(before, k) for k in ("wan", "lazy", "origin_rate", "site_rate")}
            lifecycle.set_data_paths(cfg, log=quiet, **restore)
        finally:
            fresh.forget()


def fresh_workers(client: Any, workers: int, bench: Bench) -> None:
    """Restart the workers, then warm them up (imports, coffea) from the origin.

    The site cache has just restarted: a worker's XRootD client still holds connections to
    the cache's old container, which died without a word (its network namespace went with
    it), and its next read there waited for the 2-minute request timeout."""
    client.restart(wait_for_workers=False)
    client.wait_for_workers(workers, timeout=300)
    for analysis, urls in bench.urls.items():
        run_analysis(analysis, urls, client)


class Bench:
    """One row's run: its files (cold, warm, or warmed at the regional cache), its URLs for the
    topology, and the bytes each WAN link carried meanwhile."""

    def __init__(
        self, cfg: Any, site: str, urls: dict[str, dict[str, list[str]]], fresh: FreshNames
    ) -> None:
        from remote_jobqueue.data import proxy_prefix
        from rjq_facility import data_paths

        self.cfg, self.site, self.urls = cfg, site, urls
        self.prefixes = {
            t: proxy_prefix(c) if (c := data_paths.cache_for(cfg, site, t)) else ""
            for t in data_paths.TOPOLOGIES
        }
        self.regional = proxy_prefix(cfg.hub_cache_url)
        self.fresh = fresh
        #: What each analysis's last cold near-site row read: the next warm row reads it again.
        self.last_cold: dict[str, dict[str, list[str]]] = {}

    def files(self, row: Row, analysis: str) -> dict[str, list[str]]:
        if row.data == "no cache":
            return self.urls[analysis]
        if row.data == "warm":
            return self.last_cold[analysis]
        names = self.fresh.of(self.urls[analysis])
        if row.topology == "hierarchical":
            read_through(self.regional, names)
        else:
            self.last_cold[analysis] = names
        return names

    def run(self, row: Row, analysis: str, client: Any) -> dict:
        from rjq_facility import wan

        prefix = self.prefixes[row.topology]
        for attempt in (1, 2):
            urls = {s: [prefix + u for u in us] for s, us in self.files(row, analysis).items()}
            sent = wan.sent_bytes(self.cfg)
            try:
                events, seconds = run_analysis(analysis, urls, client)
                break
            except OSError as err:
                # Right after the site cache restarts (prefetch <-> lazy), a worker's client
                # has once failed the handshake ("Hand shake failed"); one more try, with
                # fresh names, so a cold row stays cold. Counted in the results.
                if attempt == 2:
                    raise
                print(f"{analysis} {row.key}: {err}; again", file=sys.stderr, flush=True)
                time.sleep(2)
        time.sleep(0.5)  # a prefetch still in flight belongs to this row
        after = wan.sent_bytes(self.cfg)
        print(
            f"{analysis} {row.key}: {events / seconds:,.0f} events/s", file=sys.stderr, flush=True
        )
        return {
            "analysis": analysis,
            "row": row.key,
            "attempts": attempt,
            "events": events,
            "seconds": seconds,
            "origin_bytes": after["origin"] - sent["origin"],
            "site_bytes": after[self.site] - sent[self.site],
        }


# Report ------------------------------------------------------------------------------------
def summarize(results: list[dict]) -> list[dict]:
    rows = []
    for analysis in ANALYSES:
        for workers in sorted({r["workers"] for r in results}):
            for row in ROWS:
                runs = [
                    r
                    for r in results
                    if (r["analysis"], r["workers"], r["row"]) == (analysis, workers, row.key)
                ]
                if not runs:
                    continue
                rates = [r["events"] / r["seconds"] for r in runs]
                rows.append(
                    {
                        "analysis": analysis,
                        "workers": workers,
                        "row": row.key,
                        "topology": row.topology,
                        "site_cache": row.site_cache,
                        "data": row.data,
                        "runs": len(runs),
                        "events": runs[0]["events"],
                        "median": statistics.median(rates),
                        "min": min(rates),
                        "max": max(rates),
                        "origin_mb": statistics.median(r["origin_bytes"] for r in runs) / 1e6,
                        "site_mb": statistics.median(r["site_bytes"] for r in runs) / 1e6,
                    }
                )
    for row in rows:
        base = next(
            r
            for r in rows
            if (r["analysis"], r["workers"], r["row"])
            == (row["analysis"], row["workers"], "origin")
        )
        row["ratio"] = row["median"] / base["median"]
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(
        title=f"Analyses at {args.site} over a WAN (origin link {args.origin_rate}, site "
        f"downlink {args.site_rate}); medians; ratio to reading the origin directly"
    )
    columns = ("analysis", "workers", "topology", "site cache", "data", "runs", "events")
    for column in columns:
        out.add_column(
            column, justify="right" if column in ("workers", "runs", "events") else "left"
        )
    for column in ("events/s", "range", "MB origin link", "MB into site", "ratio"):
        out.add_column(column, justify="right")
    for r in rows:
        out.add_row(
            r["analysis"], str(r["workers"]), r["topology"], r["site_cache"], r["data"],
            str(r["runs"]), f"{r['events']:,}", f"{r['median']:,.0f}",
            f"{r['min']:,.0f}-{r['max']:,.0f}", f"{r['origin_mb']:.1f}", f"{r['site_mb']:.1f}",
            f"{r['ratio']:.2f}",
        )  # fmt: skip
    Console(width=170).print(out)


def plot(rows: list[dict], path: Path) -> None:
    """Events/s (top) and megabytes over the WAN (bottom) by topology, per analysis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    analyses = [a for a in ANALYSES if any(r["analysis"] == a for r in rows)]
    workers = sorted({r["workers"] for r in rows})
    keys = [row.key for row in ROWS if any(r["row"] == row.key for r in rows)]
    fig, axes = plt.subplots(2, len(analyses), figsize=(7 * len(analyses), 9), squeeze=False)
    ticks = [k.replace("-", "\n", 1) for k in keys]
    width = 0.8 / len(workers)
    for ax, analysis in zip(axes[0], analyses, strict=True):
        for i, w in enumerate(workers):
            found = {r["row"]: r for r in rows if (r["analysis"], r["workers"]) == (analysis, w)}
            x = np.arange(len(keys)) + (i - (len(workers) - 1) / 2) * width
            med = [found[k]["median"] / 1e3 for k in keys]
            low = [(found[k]["median"] - found[k]["min"]) / 1e3 for k in keys]
            high = [(found[k]["max"] - found[k]["median"]) / 1e3 for k in keys]
            ax.bar(x, med, width, yerr=[low, high], capsize=3, label=f"{w} worker(s)")
        ax.set_xticks(np.arange(len(keys)), ticks, fontsize=8)
        ax.set_ylabel("thousand events / s (median, min to max)")
        ax.set_title(f"{analysis}: events/s by data topology")
        ax.legend()
    for ax, analysis in zip(axes[1], analyses, strict=True):
        found = {r["row"]: r for r in rows if (r["analysis"], r["workers"]) == (analysis, 1)}
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [found[k]["origin_mb"] for k in keys], 0.4, label="origin's link")
        ax.bar(x + 0.2, [found[k]["site_mb"] for k in keys], 0.4, label="into the site")
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_ylabel("MB per run (median, 1 worker)")
        ax.set_title(f"{analysis}: bytes over the WAN")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--runs", type=int, default=5, help="rounds (each runs every row once)")
    cli.add_argument("--site", default="T2_A", help="a site with a cache of its own")
    cli.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    cli.add_argument("--analyses", default=",".join(ANALYSES), help="comma-separated subset")
    cli.add_argument("--origin-rate", default="200mbit", help="the origin's link (tc rate)")
    cli.add_argument("--site-rate", default="1gbit", help="the site's downlink (tc rate)")
    cli.add_argument("--out", type=Path, default=Path("benchmarks/results/data_topologies"))
    cli.add_argument("--from-json", type=Path, help="report the runs of an earlier JSON again")
    args = cli.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    args.analyses = [a for a in args.analyses.split(",") if a]
    results: list[dict] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.from_json:  # report again what an earlier run measured
        results = json.loads(args.from_json.read_text())["runs"]
    else:
        try:
            measure(args, results)
        except BaseException:
            args.out.with_suffix(".partial.json").write_text(json.dumps(results, indent=1))
            raise
    rows = summarize(results)
    table(rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "runs": results}, indent=1))
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
