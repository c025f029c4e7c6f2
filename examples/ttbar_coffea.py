"""ttbar selection (Analysis Grand Challenge style) with coffea on Dask, over the facility's
ttbar and W+jets samples: HT in the 4j1b region, trijet mass in 4j2b, jet energy scale and
b-tag variations.

    python examples/ttbar_coffea.py --site T2_A --workers 2   # a cluster at site T2_A
    python examples/ttbar_coffea.py --local-cluster           # a LocalCluster here
    python examples/ttbar_coffea.py                           # one local process

Run it with the facility's client settings (``eval "$(remote-jobqueue facility env)"``), or
detached: ``remote-jobqueue run --site T2_A --workers 2 examples/ttbar_coffea.py``. Files are
named by their origin URL; each worker's reads go through the XRootD cache nearest to it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from remote_jobqueue.analysis import cli, files, ttbar


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    urls = {
        sample: files.urls(files.list_lfns(ttbar.sample_dir(sample)), limit=args.files)
        for sample in ttbar.SAMPLES
    }
    print(", ".join(f"{sample}: {len(u)} file(s)" for sample, u in urls.items()))
    with cli.dask_client(args) as client:
        result = ttbar.run(urls, client)
    where = cli.describe(args)
    print(f"{result.summary()} [{where}]")
    for region in ttbar.REGIONS:
        counts = ", ".join(f"{p} {n:.0f}" for p, n in result.selected(region).items())
        print(f"selected in {region}: {counts}")
    png = ttbar.plot(result, args.png or Path("ttbar_coffea.png"))
    print(f"histograms saved to {png}")
    if args.json:
        args.json.write_text(json.dumps({**result.to_dict(), "where": where}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
