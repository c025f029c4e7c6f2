"""Clusters started by dask-labextension's own manager, with the site and size a request chose,
so the Dask panel lists, scales and closes them like the clusters of its own NEW button.

dask-labextension 7.0.0's ``manager.start_cluster(cluster_id="", configuration={})`` takes no
factory: ``configuration`` only names the cluster and sets its workers or adapt bounds, and the
class, args and kwargs always come from ``labextension.factory`` in Dask config, which is
global. So for one request we point that factory at `claim`, which puts the previous factory
back the moment the manager calls it. The manager reads the factory and calls it before its
first await, so no other request (the panel's NEW, say) ever builds from ours; if a later
release ever awaited in between, `claim` would build that other request's cluster from the
factory it was meant to get.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import dask.config
from dask_labextension.manager import manager

logger = logging.getLogger("remote_jobqueue")

FACTORY = "labextension.factory"
#: How long closing a cluster whose start failed half-way may take.
CLOSE_TIMEOUT = 60.0


@dataclass
class _Pending:
    """One request's cluster: its kwargs, the manager's configuration, what `claim` built."""

    kwargs: dict[str, Any]
    configuration: dict[str, Any] = field(default_factory=dict)
    made: list[Any] = field(default_factory=list)


_pending: ContextVar[_Pending | None] = ContextVar("remote_jobqueue_lab_pending", default=None)


def _ours(factory: Any) -> bool:
    return isinstance(factory, dict) and (factory.get("module"), factory.get("class")) == (
        __name__,
        "claim",
    )


def _previous_factory() -> dict[str, Any] | None:
    factory = dask.config.get(FACTORY, None)
    return factory.get("kwargs", {}).get("previous") if _ours(factory) else factory


def _restore(previous: dict[str, Any] | None) -> None:
    if not _ours(dask.config.get(FACTORY, None)):
        return
    if previous is None:
        dask.config.config.get("labextension", {}).pop("factory", None)
    else:
        dask.config.set({FACTORY: previous})


def _build(factory: dict[str, Any] | None, *args: Any, **kwargs: Any) -> Any:
    """A cluster from a ``labextension.factory`` mapping, as dask-labextension builds one."""
    if not factory:
        raise RuntimeError(f"no {FACTORY} in Dask config")
    cls = getattr(importlib.import_module(factory["module"]), factory["class"])
    own = {key.replace("-", "_"): value for key, value in (factory.get("kwargs") or {}).items()}
    return cls(*(factory.get("args") or []), *args, **own, **kwargs)


def claim(*args: Any, previous: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """``labextension.factory`` while one of our requests starts (see the module docstring):
    restores the previous factory, then builds the request's `RemoteHTCondorCluster`."""
    _restore(previous)
    pending = _pending.get()
    if pending is None:  # another request's start read the factory meanwhile: build its own
        return _build(previous, *args, **kwargs)
    from ..cluster import RemoteHTCondorCluster

    cluster = RemoteHTCondorCluster(
        **pending.kwargs, asynchronous=kwargs.get("asynchronous", True), quiet=True
    )
    pending.made.append(cluster)
    # The panel's name: where it runs (the site "random" chose) and the name its jobs carry.
    pending.configuration.setdefault("name", f"{cluster.site.display_name} ({cluster.name})")
    return cluster


async def start_cluster(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Start a `RemoteHTCondorCluster` with ``kwargs`` through dask-labextension's manager;
    its cluster model on success. On failure nothing stays running or registered."""
    previous = _previous_factory()
    pending = _Pending(kwargs=dict(kwargs))
    token = _pending.set(pending)
    ours = {"module": __name__, "class": "claim", "args": [], "kwargs": {"previous": previous}}
    dask.config.set({FACTORY: ours})
    try:
        model = await manager.start_cluster(configuration=pending.configuration)
        return _named_where_it_runs(model, pending.made)
    except BaseException:
        await _close_unregistered(pending.made)
        raise
    finally:
        _restore(previous)  # if the manager failed before it called the factory
        _pending.reset(token)


def _named_where_it_runs(model: dict[str, Any], made: list[Any]) -> dict[str, Any]:
    """A ``random`` cluster knows its site only once it runs: name it by that site then (the
    manager keeps names in a private table; without it the first name stays)."""
    names = getattr(manager, "_cluster_names", None)
    if not made or not isinstance(names, dict) or model["id"] not in names:
        return model
    cluster = made[0]
    name = f"{cluster.site.display_name} ({cluster.name})"
    names[model["id"]] = model["name"] = name
    return model


async def _close_unregistered(clusters: list[Any]) -> None:
    # 7.0.0 registers a cluster only once it started (and scaled, if labextension.default
    # says so); one that failed after it was built must not keep its jobs or processes.
    registered = list(getattr(manager, "_clusters", {}).values())
    for cluster in clusters:
        if any(cluster is other for other in registered):
            continue
        with contextlib.suppress(Exception):
            await asyncio.wait_for(cluster.close(), CLOSE_TIMEOUT)
