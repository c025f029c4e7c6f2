"""The dimuon histogram with ROOT's RDataFrame: distributed on a Dask client, or local.

Distributed RDataFrame splits the dataset into ranges of entries, ships the computation graph
(the selection and the mass as C++ strings from :mod:`.dimuon`, JIT-compiled on each worker)
and merges the partial histograms. Never import the Python ``XRootD`` bindings in a process that
runs this: ROOT bundles its own XRootD client, and the two in one process crash it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dimuon


def run(urls: list[str], client: Any = None, npartitions: int | None = None) -> dimuon.Result:
    """The histogram of ``urls``: on ``client``'s workers, or single-threaded here if ``None``."""
    import ROOT

    def compute() -> tuple[np.ndarray, int]:
        if client is None:
            frame = ROOT.RDataFrame(dimuon.TREE, urls)
        else:
            options = {"npartitions": npartitions} if npartitions else {}
            frame = ROOT.RDataFrame(dimuon.TREE, urls, executor=client, **options)
        events = frame.Count()
        histogram = (
            frame.Filter(dimuon.CPP_SELECTION, "opposite-charge pair")
            .Define("Dimuon_mass", dimuon.CPP_MASS)
            .Histo1D(
                ("dimuon_mass", dimuon.TITLE, dimuon.BINS, dimuon.LOW, dimuon.HIGH),
                "Dimuon_mass",
            )
        )
        hist = histogram.GetValue()  # one pass (one distributed job) computes every booked result
        counts = np.array([hist.GetBinContent(i) for i in range(dimuon.BINS + 2)])
        return np.rint(counts).astype(np.int64), int(events.GetValue())

    engine = "RDataFrame" + ("" if client is None else " on dask")
    return dimuon.timed(engine, compute)
