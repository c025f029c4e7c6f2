"""Client and site must run the same Python minor version and the same Dask stack.

Dask pickles task functions with cloudpickle, whose code objects are tied to the Python minor
version, and client, scheduler and workers speak `distributed`'s protocol: a mismatch shows up
later as an unpickling error deep in a task, or a comm that hangs. The scheduler answers
``versions`` (`distributed.versions.get_versions`); comparing at start turns that into one
clear error that names both sides.
"""

from __future__ import annotations

from typing import Any

from .errors import VersionMismatch

__all__ = ["MATCHING_PACKAGES", "VersionMismatch", "check", "mismatches"]

#: What must be equal on both sides (``distributed`` itself only warns about these).
MATCHING_PACKAGES = ("dask", "distributed", "cloudpickle", "msgpack")


def _python_minor(versions: dict[str, Any]) -> str:
    return ".".join(str(versions.get("host", {}).get("python", "?")).split(".")[:2])


def mismatches(client: dict[str, Any], site: dict[str, Any]) -> list[str]:
    """What differs, as ``"<what> <client's> here, <site's> at the site"``."""
    found = []
    here, there = _python_minor(client), _python_minor(site)
    if here != there:
        found.append(f"Python {here} here, {there} at the site")
    for package in MATCHING_PACKAGES:
        mine = client.get("packages", {}).get(package)
        theirs = site.get("packages", {}).get(package)
        if mine != theirs:
            found.append(f"{package} {mine} here, {theirs} at the site")
    return found


def check(client: dict[str, Any], site: dict[str, Any], where: str) -> None:
    """Raise :class:`VersionMismatch` naming every difference, and what to do about it."""
    found = mismatches(client, site)
    if found:
        raise VersionMismatch(
            f"the scheduler at {where} runs other software than this client: "
            + "; ".join(found)
            + ". Tasks are pickled, so both sides need the same Python minor version and the "
            "same dask, distributed and cloudpickle: choose the site's image or software area "
            "that matches your environment (remote-jobqueue.image, remote-jobqueue.python)"
        )
