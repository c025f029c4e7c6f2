"""The dimuon histogram with uproot and awkward: one task per file, on Dask or in this process.

Each task opens its file by URL; the open goes through the nearest cache of wherever the task
runs (the proxy plugin reads the process's environment), and returns only counts, so what
crosses the network back to the client is a few hundred integers per file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import dimuon


def process_file(url: str) -> tuple[np.ndarray, int]:
    """Counts and number of events of one file; a read the storage refused raises
    :class:`~remote_jobqueue.storage_auth.StorageAccessDenied` saying why, where it ran."""
    import uproot

    from ..storage_auth import refusals_explained

    with refusals_explained(url), uproot.open(url) as handle:
        tree = handle[dimuon.TREE]
        arrays = tree.arrays(list(dimuon.BRANCHES))
        return dimuon.fill(dimuon.mass(arrays)), tree.num_entries


def run(urls: list[str], client: Any = None) -> dimuon.Result:
    """The histogram of ``urls``: on ``client``'s workers, or in this process if ``None``."""

    def compute() -> tuple[np.ndarray, int]:
        if client is None:
            return dimuon.total(process_file(url) for url in urls)
        futures = client.map(process_file, urls, pure=False)
        return dimuon.total(client.gather(futures))

    engine = "uproot" + ("" if client is None else " on dask")
    return dimuon.timed(engine, compute)
