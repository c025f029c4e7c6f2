"""Dimuon mass spectrum with uproot and awkward on Dask, over the facility's NanoAOD dataset.

    python examples/dimuon_uproot.py --site T2_A --workers 2   # a cluster at site T2_A
    python examples/dimuon_uproot.py --local-cluster           # a LocalCluster here
    python examples/dimuon_uproot.py                           # one local process

Run it with the facility's client settings (``eval "$(remote-jobqueue facility env)"``). Files
are named by their origin URL; each worker's reads go through the XRootD cache nearest to it.
"""

from __future__ import annotations

import sys

from remote_jobqueue.analysis import cli, files, with_uproot


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    urls = files.urls(limit=args.files)
    print(f"{len(urls)} file(s), e.g. {urls[0]}")
    with cli.dask_client(args) as client:
        result = with_uproot.run(urls, client)
    cli.report(result, args, "dimuon_uproot.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
