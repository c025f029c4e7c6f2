"""Dimuon mass spectrum with ROOT's distributed RDataFrame on Dask, over the facility's dataset.

    python examples/dimuon_rdataframe.py --site T2_A --workers 2   # a cluster at site T2_A
    python examples/dimuon_rdataframe.py --local-cluster           # a LocalCluster here
    python examples/dimuon_rdataframe.py                           # one local process

Needs ROOT (``pip install 'remote-jobqueue[root]'``) and the facility's client settings. The
histogram is the same as ``dimuon_uproot.py``'s, bin for bin: both use
``remote_jobqueue.analysis.dimuon``.
"""

from __future__ import annotations

import sys

import ROOT  # before anything else: see remote_jobqueue.analysis.with_rdataframe

from remote_jobqueue.analysis import cli, files, with_rdataframe


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(__doc__.splitlines()[0]).parse_args(argv)
    ROOT.gROOT.SetBatch(True)
    urls = files.urls(limit=args.files)
    print(f"{len(urls)} file(s), e.g. {urls[0]}")
    with cli.dask_client(args) as client:
        result = with_rdataframe.run(urls, client)
    cli.report(result, args, "dimuon_rdataframe.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
