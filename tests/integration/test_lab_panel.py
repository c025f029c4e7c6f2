"""The Dask panel of JupyterLab (dask-labextension 7's REST API, served by a real `jupyter
lab`) drives our clusters as it drives a `LocalCluster`.

Specification, for a cluster at `T2_A` and for `Local`:
- `PUT /dask/clusters` creates one; its model names its dashboard, which the server proxies;
- `PATCH` with ``workers: 2`` scales it, and the model then shows 2 workers, their cores and
  memory;
- `PATCH` with ``adapt: {minimum: 0, maximum: 3}`` makes it adaptive, the model shows the bounds;
- a request that fails (bounds the wrong way round) says why, and leaves a cluster the panel
  can still scale and close;
- `DELETE` answers 204, and no job of the cluster is left at the site.
"""

from __future__ import annotations

import pytest

from remote_jobqueue.clusters import list_clusters

from ..waiting import wait_until
from .helpers import panel_server

pytestmark = pytest.mark.timeout(300)


def _own_clusters() -> set[str]:
    return {info.cluster_id for info in list_clusters()}


@pytest.mark.parametrize("site", ["T2_A", "local"])
def test_the_dask_panel_creates_scales_adapts_and_closes(facility, alice, tmp_path, site):
    before = _own_clusters()
    with panel_server(facility, "alice", tmp_path, site=site, cores=1, memory="1 GiB") as lab:
        created = lab.request("PUT", "/dask/clusters")
        assert created.status_code == 200, created.text
        model = created.json()
        cluster = f"/dask/clusters/{model['id']}"
        assert model["name"] == "RemoteHTCondorCluster 1"
        assert model["dashboard_link"].startswith("http://127.0.0.1:")
        assert model["workers"] == 0
        # The dashboard, proxied by the server as the panel's plots are.
        plots = lab.request("GET", f"/dask/dashboard/{model['id']}/individual-plots.json")
        assert plots.status_code == 200 and "Task Stream" in " ".join(plots.json())

        scaled = lab.request("PATCH", cluster, json={"workers": 2})
        assert scaled.status_code == 200, scaled.text
        wait_until(lambda: lab.request("GET", cluster).json()["workers"] == 2, 120, "2 workers")
        model = lab.request("GET", cluster).json()
        assert (model["cores"], model["memory"]) == (2, "2.00 GiB")
        if site != "local":
            assert _own_clusters() - before, "the cluster's jobs are in the queue"

        adapted = lab.request("PATCH", cluster, json={"adapt": {"minimum": 0, "maximum": 3}})
        assert adapted.status_code == 200, adapted.text
        assert adapted.json()["adapt"] == {"minimum": 0, "maximum": 3}
        assert lab.request("GET", cluster).json()["adapt"] == {"minimum": 0, "maximum": 3}

        wrong = lab.request("PATCH", cluster, json={"adapt": {"minimum": 3, "maximum": 1}})
        assert wrong.status_code == 500
        assert "minimum (3 jobs) is larger than maximum (1 jobs)" in wrong.json()["message"]
        assert lab.request("PATCH", cluster, json={"workers": 1}).status_code == 200

        closed = lab.request("DELETE", cluster)
        assert closed.status_code == 204, closed.text
        assert lab.request("GET", "/dask/clusters").json() == []
    assert _own_clusters() == before
