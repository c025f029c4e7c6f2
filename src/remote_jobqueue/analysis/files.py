"""The dataset's files, as origin URLs that the XRootD proxy plugin sends through a cache.

Users name data by logical file names (``/store/...``); turning them into ``root://origin//``
URLs is all a client has to do, because every open of such a URL is redirected to the nearest
cache by the environment (:mod:`remote_jobqueue.data`), on the notebook side and in every job.
A URL built in the notebook therefore reads through the *worker's* cache when a worker opens it.
"""

from __future__ import annotations

import os
import sys

from ..data import to_url

ORIGIN_VARIABLE = "RJQ_XROOTD_ORIGIN"
#: The dataset's directory (an LFN, ``/store/...``) when none is passed; `facility env` sets it.
DATASET_VARIABLE = "RJQ_DATASET_DIR"


def origin(explicit: str | None = None) -> str:
    """The origin LFNs resolve at: ``explicit``, else ``$RJQ_XROOTD_ORIGIN``."""
    found = explicit or os.environ.get(ORIGIN_VARIABLE)
    if not found:
        raise LookupError(f"no XRootD origin: pass one or set {ORIGIN_VARIABLE}")
    return found


def dataset_dir(explicit: str | None = None) -> str:
    """The directory (an LFN) of the dataset's files: ``explicit``, else ``$RJQ_DATASET_DIR``."""
    found = explicit or os.environ.get(DATASET_VARIABLE)
    if not found:
        raise LookupError(f"no dataset directory: pass one or set {DATASET_VARIABLE}")
    return found


def list_lfns(directory: str | None = None, *, at: str | None = None) -> list[str]:
    """The ``.root`` files under ``directory`` (default: :func:`dataset_dir`) at the origin, sorted
    (listings are not cached).

    Lists with ROOT's own XRootD client when ROOT is loaded: ROOT bundles an XRootD 5 client,
    and loading the Python ``XRootD`` (6.x) bindings next to it crashes the process.
    """
    directory = dataset_dir(directory)
    if "ROOT" in sys.modules:
        names = _list_with_root(to_url(directory, origin(at)))
    else:
        names = _list_with_xrootd(origin(at), directory)
    return [f"{directory.rstrip('/')}/{name}" for name in sorted(names) if name.endswith(".root")]


def _list_with_xrootd(at: str, directory: str) -> list[str]:
    from XRootD import client

    status, listing = client.FileSystem(to_url("/", at).rstrip("/")).dirlist(directory)
    if not status.ok:
        raise OSError(f"cannot list {directory} at {at}: {status.message}")
    return [entry.name for entry in listing]


def _list_with_root(url: str) -> list[str]:
    import ROOT

    handle = ROOT.gSystem.OpenDirectory(url)
    if not handle:
        raise OSError(f"cannot list {url}")
    names = []
    try:
        while entry := ROOT.gSystem.GetDirEntry(handle):
            names.append(str(entry))
    finally:
        ROOT.gSystem.FreeDirectory(handle)
    return names


def urls(
    lfns: list[str] | None = None, *, at: str | None = None, limit: int | None = None
) -> list[str]:
    """Origin URLs of ``lfns`` (default: the files of :func:`dataset_dir`), the first ``limit``."""
    names = list_lfns(at=at) if lfns is None else list(lfns)
    return [to_url(name, origin(at)) for name in names[:limit]]
