"""How `remote_jobqueue.lab` starts a cluster through dask-labextension's own manager.

dask-labextension 7.0.0 builds every cluster from the global Dask config key
``labextension.factory``; a request points it at `factory.claim` for one start.

Specification:
- the manager builds the request's `RemoteHTCondorCluster` (its kwargs, asynchronously),
  registers it, and names it after its site and its own name;
- while that cluster starts, and after, ``labextension.factory`` is the previous one again, so
  the panel's NEW button builds what it always did, and two requests at once get their own;
- a start that fails closes what was built, registers nothing, and restores the factory;
- a start that reads the factory in the window but is not ours builds the previous factory;
- without dask-labextension's server extension, no cluster is started (no panel would show it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import dask.config
import pytest
from dask_labextension.manager import DaskClusterManager

from remote_jobqueue import cluster as cluster_module
from remote_jobqueue.errors import GatewayError, UnknownSite
from remote_jobqueue.lab import factory

PREVIOUS = {"module": __name__, "class": "OtherCluster", "args": [], "kwargs": {"n-workers": 3}}


class FakeCluster:
    """Stands for `RemoteHTCondorCluster`: what the manager reads, and what it was given."""

    built: list[FakeCluster] = []

    def __init__(self, site: str, *, asynchronous: bool = False, quiet: bool = False, **kw):
        if site == "nowhere":
            raise UnknownSite(site, ["local"])
        self.kwargs = {"site": site, **kw}
        self.asynchronous = asynchronous
        self.site = SimpleNamespace(display_name=f"HTCondor-{site}")
        self.name = f"rjq-{len(FakeCluster.built):012x}"
        self.scheduler_info: dict[str, Any] = {"workers": {}}
        self.scheduler_address = "tls://127.0.0.1:1"
        self.dashboard_link = ""
        self.factory_while_starting: Any = None
        self.closed = False
        FakeCluster.built.append(self)

    def __await__(self):
        async def start() -> FakeCluster:
            await asyncio.sleep(0.05)  # others run meanwhile, as a real start lets them
            self.factory_while_starting = dask.config.get(factory.FACTORY)
            if self.kwargs["site"] == "broken":
                raise GatewayError("cannot open the tunnel through gw:22")
            return self

        return start().__await__()

    async def close(self) -> None:
        self.closed = True


class OtherCluster:
    """What ``labextension.factory`` built before a request changed it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


@pytest.fixture
async def manager(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DaskClusterManager]:
    FakeCluster.built = []
    monkeypatch.setattr(cluster_module, "RemoteHTCondorCluster", FakeCluster)
    fresh = DaskClusterManager()
    monkeypatch.setattr(factory, "manager", fresh)
    with dask.config.set({factory.FACTORY: PREVIOUS}):
        yield fresh


async def test_the_manager_builds_registers_and_names_the_requested_cluster(manager) -> None:
    model = await factory.start_cluster({"site": "T2_A", "cores": 2, "memory": "4 GiB"})
    (built,) = FakeCluster.built
    assert built.kwargs == {"site": "T2_A", "cores": 2, "memory": "4 GiB"}
    assert built.asynchronous is True
    assert model["name"] == "HTCondor-T2_A (rjq-000000000000)"
    assert [c["id"] for c in manager.list_clusters()] == [model["id"]]


async def test_the_previous_factory_is_back_while_the_cluster_starts_and_after(manager) -> None:
    await factory.start_cluster({"site": "T2_A"})
    assert FakeCluster.built[0].factory_while_starting == PREVIOUS
    assert dask.config.get(factory.FACTORY) == PREVIOUS


async def test_two_requests_at_once_each_get_their_own_cluster(manager) -> None:
    a, b = await asyncio.gather(
        factory.start_cluster({"site": "T2_A"}), factory.start_cluster({"site": "T2_B"})
    )
    assert {a["name"].split()[0], b["name"].split()[0]} == {"HTCondor-T2_A", "HTCondor-T2_B"}
    assert len(manager.list_clusters()) == 2
    assert dask.config.get(factory.FACTORY) == PREVIOUS


async def test_a_failed_start_closes_what_was_built_and_registers_nothing(manager) -> None:
    with pytest.raises(GatewayError, match="cannot open the tunnel"):
        await factory.start_cluster({"site": "broken"})
    assert FakeCluster.built[0].closed
    assert manager.list_clusters() == []
    assert dask.config.get(factory.FACTORY) == PREVIOUS


async def test_a_cluster_that_cannot_be_built_leaves_the_factory_as_it_was(manager) -> None:
    with pytest.raises(UnknownSite):
        await factory.start_cluster({"site": "nowhere"})
    assert manager.list_clusters() == []
    assert dask.config.get(factory.FACTORY) == PREVIOUS


def test_a_start_that_is_not_ours_builds_the_previous_factory() -> None:
    other = factory.claim(previous=PREVIOUS, asynchronous=True)
    assert isinstance(other, OtherCluster)
    assert other.kwargs == {"n_workers": 3, "asynchronous": True}


def test_clusters_are_refused_when_dask_labextensions_server_extension_is_off() -> None:
    from remote_jobqueue.lab.handlers import dask_panel_enabled

    def server(**extensions: bool) -> SimpleNamespace:
        packages = {name: SimpleNamespace(enabled=on) for name, on in extensions.items()}
        return SimpleNamespace(extension_manager=SimpleNamespace(extensions=packages))

    assert dask_panel_enabled(server(dask_labextension=True))
    assert not dask_panel_enabled(server(dask_labextension=False))
    assert not dask_panel_enabled(server(jupyterlab=True))
