"""Through the gateway tunnel vs straight to the scheduler: round trips and bulk transfer.

The cluster runs at the hub-side site (`T2_LOCAL`), the one place where the client can also
reach the scheduler's own address, so both paths talk to the same scheduler and worker. Rounds
alternate between the paths. Measured:

* round trips per second: submit one tiny task and wait for its result, one after another;
* MB/s: gather a freshly computed 100 MB result to the client.

    python benchmarks/tunnel_vs_direct.py --rounds 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _facility
from rich.console import Console
from rich.table import Table

SITE = "T2_LOCAL"


def _inc(x: int) -> int:
    return x + 1


def _payload(nbytes: int, salt: int) -> bytes:
    return bytes([salt % 251]) * nbytes


def round_trips(client, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        client.submit(_inc, i, pure=False).result()
    return count / (time.perf_counter() - start)


def gather_rate(client, nbytes: int, salt: int) -> float:
    future = client.submit(_payload, nbytes, salt, pure=False)
    from distributed import wait

    wait(future)  # computed at the worker; only the transfer is timed
    start = time.perf_counter()
    data = future.result()
    seconds = time.perf_counter() - start
    assert len(data) == nbytes
    del future
    return nbytes / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=200, help="tiny tasks per round")
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()

    _facility.use_facility()
    from dask.distributed import Client

    from remote_jobqueue import RemoteHTCondorCluster

    console = Console()
    nbytes = args.megabytes * 10**6
    results: dict[str, dict[str, list[float]]] = {
        path: {"rt/s": [], "MB/s": []} for path in ("tunnel", "direct")
    }
    with RemoteHTCondorCluster(site=SITE, cores=1, memory="2 GiB", n_workers=1, quiet=True) as cl:
        with Client(cl) as probe:
            probe.wait_for_workers(1, timeout=300)
            direct = probe.scheduler_info()["address"]
        addresses = {"tunnel": cl.scheduler_address, "direct": direct}
        console.print(f"tunnel: {addresses['tunnel']}  direct: {addresses['direct']}")
        for round_ in range(1, args.rounds + 1):
            for path, address in addresses.items():
                with Client(address, timeout=30, security=cl.security) as client:
                    client.submit(_inc, 0, pure=False).result()  # warm up the connection
                    rts = round_trips(client, args.tasks)
                    mbs = gather_rate(client, nbytes, salt=round_)
                results[path]["rt/s"].append(rts)
                results[path]["MB/s"].append(mbs)
                console.print(f"round {round_}: {path}: {rts:.0f} round trips/s, {mbs:.0f} MB/s")

    table = Table(title=f"Tunnel vs direct at {SITE} (medians of {args.rounds} rounds)")
    for column in ("path", "round trips/s", f"gather {args.megabytes} MB, MB/s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    med = {p: {k: _facility.median(v) for k, v in r.items()} for p, r in results.items()}
    for path, values in med.items():
        table.add_row(path, f"{values['rt/s']:.0f}", f"{values['MB/s']:.0f}")
    table.add_row(
        "ratio tunnel / direct",
        f"{med['tunnel']['rt/s'] / med['direct']['rt/s']:.2f}",
        f"{med['tunnel']['MB/s'] / med['direct']['MB/s']:.2f}",
    )
    console.print(table)


if __name__ == "__main__":
    main()
