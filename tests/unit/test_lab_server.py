"""The lab's server extension, `remote_jobqueue.lab`, in a real `jupyter server` beside
dask-labextension's, with two fake sites whose collector cannot be reached.

Specification:
- ``GET /remote-jobqueue/sites`` lists "HTCondor (random site)" first, each site by its label,
  "Local" last; free cores of an unreachable collector are unknown (null), not an error; the
  dialog's defaults come from Dask config; without the token it is refused.
- ``PUT /remote-jobqueue/clusters`` refuses an unknown site (naming the known ones), cores that
  are not a positive whole number and memory that is no size, with 400 and that message.
- A cluster that cannot start answers with the exception's text (400 for a size no machine
  takes, 502 when there is no token for the gateway) and leaves no cluster in the panel.
- A local cluster made there is dask-labextension's: listed in ``GET /dask/clusters``, scaled
  by its ``PATCH``, closed by its ``DELETE``, and then no process of it is left.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from ..lab_server import LabServer
from ..waiting import wait_until

pytestmark = pytest.mark.timeout(240)

UNREACHABLE = "127.0.0.1:1"  # refused at once: no collector, no gateway
SITES = {
    "T2_A": {
        "label": "Site A",
        "collector": UNREACHABLE,
        "schedd": "schedd-a",
        "gateway": UNREACHABLE,
        "python": "/usr/bin/python3",
    },
    "T2_B": {"collector": UNREACHABLE},
}
GOOD = {"site": "local", "cores": 1, "memory": "1 GiB", "image": None}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    home = tmp_path_factory.mktemp("lab")
    empty_token = home / "token"
    empty_token.write_text("")
    empty_token.chmod(0o600)
    settings = {
        "sites": SITES,
        "site": "T2_B",
        "cores": 2,
        "memory": "3 GiB",
        "image": "/cvmfs/images/worker.sif",
        "token-file": str(empty_token),
    }
    lab = LabServer(home, {"remote-jobqueue": settings})
    yield lab
    lab.close()


def clusters(server: LabServer) -> list[dict]:
    response = server.get("/dask/clusters")
    assert response.status_code == 200, response.text
    return response.json()


# Listing the sites ---------------------------------------------------------------------------


def test_sites_are_random_first_then_each_by_its_label_then_local(server: LabServer) -> None:
    response = server.get("/remote-jobqueue/sites")
    assert response.status_code == 200, server.log_tail()
    assert response.json()["sites"] == [
        {"value": "random", "label": "HTCondor (random site)", "free_cores": None},
        {"value": "T2_A", "label": "Site A", "free_cores": None},
        {"value": "T2_B", "label": "HTCondor-T2_B", "free_cores": None},
        {"value": "local", "label": "Local"},
    ]


def test_the_dialogs_defaults_come_from_dask_config(server: LabServer) -> None:
    defaults = server.get("/remote-jobqueue/sites").json()["defaults"]
    assert defaults == {
        "site": "T2_B",
        "cores": 2,
        "memory": "3 GiB",
        "image": "/cvmfs/images/worker.sif",
    }


def test_without_the_token_the_sites_are_refused(server: LabServer) -> None:
    assert server.get("/remote-jobqueue/sites", token="wrong").status_code == 403


# Refusals before anything starts -------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"site": "T2_NOWHERE"},
            "unknown site 'T2_NOWHERE'; known sites: random, T2_A, T2_B, local",
        ),
        ({"cores": 0}, "cores must be a whole number of at least 1 (got 0)"),
        ({"cores": -2}, "cores must be a whole number of at least 1 (got -2)"),
        ({"cores": 1.5}, "cores must be a whole number of at least 1 (got 1.5)"),
        ({"cores": "4"}, "cores must be a whole number of at least 1 (got '4')"),
        ({"cores": None}, "cores must be a whole number of at least 1 (got nothing)"),
        ({"memory": "plenty"}, "memory must be a size such as '4 GiB' (got 'plenty')"),
        ({"memory": ""}, "memory must be a size such as '4 GiB' (got '')"),
        ({"memory": "0 B"}, "memory must be at least one byte (got '0 B')"),
        ({"image": 7}, "image must be text, an image name or path (got 7)"),
    ],
)
def test_bad_input_is_a_400_that_says_what_is_wrong(
    server: LabServer, change: dict, message: str
) -> None:
    response = server.put("/remote-jobqueue/clusters", {**GOOD, **change})
    assert (response.status_code, response.json()) == (400, {"message": message})
    assert clusters(server) == []


def test_a_body_that_is_no_json_object_is_a_400(server: LabServer) -> None:
    response = server.put("/remote-jobqueue/clusters", "site=local")
    assert response.status_code == 400
    assert response.json()["message"].startswith("the body is not JSON")


# Clusters that cannot start ------------------------------------------------------------------


def test_a_size_no_machine_takes_is_a_400_with_the_clusters_own_message(
    server: LabServer,
) -> None:
    response = server.put("/remote-jobqueue/clusters", {**GOOD, "memory": "1 MiB"})
    assert response.status_code == 400
    assert "too small" in response.json()["message"]
    assert clusters(server) == []


def test_a_failed_start_says_why_and_leaves_no_cluster(server: LabServer) -> None:
    # T2_A exists, but this server has no bearer token for its gateway (an empty token file).
    response = server.put("/remote-jobqueue/clusters", {**GOOD, "site": "T2_A"})
    assert response.status_code == 502, response.text
    assert response.json()["message"].startswith("no bearer token for the gateway")
    assert clusters(server) == []


# A real cluster, in dask-labextension's panel ------------------------------------------------


def _bundles(server: LabServer) -> list:
    def is_bundle(proc) -> bool:
        try:
            return "remote_jobqueue.bundle" in " ".join(proc.cmdline())
        except Exception:
            return False

    return [p for p in server.descendants() if is_bundle(p)]


def test_a_local_cluster_is_listed_scaled_and_closed_by_dask_labextension(
    server: LabServer,
) -> None:
    response = server.put("/remote-jobqueue/clusters", {**GOOD, "image": ""})
    assert response.status_code == 201, f"{response.text}\n{server.log_tail()}"
    model = response.json()
    assert re.fullmatch(r"\w{8}-\w{4}-\w{4}-\w{4}-\w{12}", model["id"])
    assert re.fullmatch(r"Local \(rjq-[0-9a-f]{12}\)", model["name"])
    assert model["scheduler_address"].startswith("tls://")
    assert model["workers"] == 0
    assert [c["id"] for c in clusters(server)] == [model["id"]]
    assert len(_bundles(server)) == 1

    path = f"/dask/clusters/{model['id']}"
    assert server.request("PATCH", path, json={"workers": 1}).status_code == 200
    wait_until(lambda: server.get(path).json()["workers"] == 1, 90, "one worker in the panel")
    assert server.get(path).json()["cores"] == 1

    assert server.request("DELETE", path).status_code == 204
    assert clusters(server) == []
    wait_until(lambda: not _bundles(server), 30, "the bundle's processes end")
