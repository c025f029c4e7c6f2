"""Clusters that outlive their kernel, and clusters HTCondor places.

Specification:
- a cluster made with ``shutdown_on_close=False`` keeps running when its maker closes it; a new
  process attaches to it with `from_name`, computes, and shuts it down; nothing is left;
- another user can neither find it nor open its ports at the gateway (its TLS pair included);
- left alone, a detached cluster ends by itself after its idle timeout;
- ``site="random"`` is HTCondor's choice: with T2_A full, ten random clusters all start
  elsewhere, and their workers go where their scheduler landed;
- a scheduler job that crashes leaves its stdout and stderr in `get_logs()`.
"""

from __future__ import annotations

import asyncio
import json
import time

import asyncssh
import pytest
from dask.distributed import Client

from remote_jobqueue import ClusterLost, RemoteHTCondorCluster
from remote_jobqueue import schedd as sched
from remote_jobqueue.clusters import stop_cluster
from remote_jobqueue.errors import ClusterNotFound
from rjq_facility import issuer
from rjq_facility.gateway_service import GATEWAY_AUDIENCE

from ..waiting import wait_until
from .helpers import cli, gateway_refusal, jobs_of, podman, python_job, run_as

pytestmark = pytest.mark.timeout(300)


def test_a_detached_cluster_is_attached_from_another_process_and_shut_down_there(facility, alice):
    cluster = RemoteHTCondorCluster(
        site="T2_A",
        cores=1,
        memory="1 GiB",
        n_workers=1,
        shutdown_on_close=False,
        lease=3,
        quiet=True,
    )
    cluster_id = cluster.cluster_id
    try:
        cluster.close()
        assert cluster.status.name == "closed"
        time.sleep(8)  # well past the lease: a detached cluster is not bound by it
        assert [info.cluster_id for info in RemoteHTCondorCluster.list()].count(cluster_id) == 1
        attached = run_as(
            facility,
            "alice",
            f"""
            from dask.distributed import Client
            from remote_jobqueue import RemoteHTCondorCluster
            cluster = RemoteHTCondorCluster.from_name({cluster_id!r}, quiet=True)
            print("site", cluster.site.name)
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=120)
                print("sum", client.submit(sum, [1, 2, 3]).result())
            cluster.shutdown()
            """,
            timeout=240,
        )
        assert attached.returncode == 0, attached.stderr[-3000:]
        assert "site T2_A" in attached.stdout and "sum 6" in attached.stdout
        wait_until(lambda: not jobs_of(facility, cluster_id), 60, "no job left")
    finally:
        _stop_if_left(cluster_id)


def _stop_if_left(cluster_id: str) -> None:
    """A failed test leaves no detached cluster behind for the next one."""
    if any(info.cluster_id == cluster_id for info in RemoteHTCondorCluster.list()):
        stop_cluster(cluster_id)


@pytest.mark.security
def test_another_user_can_neither_find_nor_open_a_detached_cluster(facility, alice):
    cluster = RemoteHTCondorCluster(site="T2_A", shutdown_on_close=False, quiet=True)
    cluster_id = cluster.cluster_id
    try:
        cluster.close()
        bob = run_as(
            facility,
            "bob",
            f"""
            from remote_jobqueue import RemoteHTCondorCluster
            from remote_jobqueue.errors import ClusterNotFound
            try:
                RemoteHTCondorCluster.from_name({cluster_id!r}, quiet=True)
            except ClusterNotFound as err:
                print("refused:", err)
            """,
        )
        assert f"refused: no cluster {cluster_id} of yours is running" in bob.stdout, bob.stderr
        bob_token = issuer.password_grant(facility, "bob", audience=GATEWAY_AUDIENCE)
        for port in (8786, 8788):  # the scheduler, and the cluster's TLS pair
            refused = asyncio.run(
                gateway_refusal(facility, bob_token["access_token"], cluster_id, port)
            )
            assert refused.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
            assert (
                refused.reason == f"no cluster {cluster_id!r} with port {port} registered for you"
            )
        # Alice's own login for the gateway alone (no schedd audience) reaches the port, but
        # cannot write the bundle's challenge into the job's ad: no pair.
        gateway_only = issuer.password_grant(facility, "alice", audience=GATEWAY_AUDIENCE)
        refusal = asyncio.run(_attach_without_the_schedd(facility, gateway_only, cluster_id))
        assert refusal == {"refused": "the challenge is not in the scheduler job's ad"}
        # Alice herself, attached: the cluster is intact.
        again = RemoteHTCondorCluster.from_name(cluster_id, quiet=True)
        assert again.site.name == "T2_A"
        again.shutdown()
        wait_until(lambda: not jobs_of(facility, cluster_id), 60, "no job left")
    finally:
        _stop_if_left(cluster_id)


async def _attach_without_the_schedd(facility, token: dict, cluster_id: str) -> dict:
    """The credentials port as a gateway-only login sees it: take the challenge, skip the
    schedd, ask anyway; the bundle's answer."""
    from remote_jobqueue.gateway.hostkeys import load_host_keys
    from remote_jobqueue.gateway.tunnel import connect_gateway
    from rjq_facility import gateway_service

    keys = load_host_keys(gateway_service.public_host_key(facility))
    conn = await connect_gateway(facility.gateway, keys, token["access_token"])
    try:
        reader, writer = await conn.open_connection(cluster_id, 8788)
        hello = json.loads(await reader.readline())
        assert hello["attribute"] == "RjqAttachChallenge"
        writer.write(b'{"written": true}\n')
        return json.loads(await reader.readline())
    finally:
        conn.close()


@pytest.mark.security
def test_a_cluster_that_shuts_down_on_close_offers_no_tls_pair_even_to_its_owner(facility, alice):
    with RemoteHTCondorCluster(site="T2_LOCAL", resident_worker=False, quiet=True) as cluster:
        token = issuer.password_grant(facility, "alice", audience=GATEWAY_AUDIENCE)
        refused = asyncio.run(
            gateway_refusal(facility, token["access_token"], cluster.cluster_id, 8788)
        )
        assert refused.reason == (
            f"no cluster {cluster.cluster_id!r} with port 8788 registered for you"
        )


def test_from_name_of_an_unknown_cluster_says_how_to_list_yours(facility, alice):
    with pytest.raises(ClusterNotFound, match=r"RemoteHTCondorCluster\.list\(\)"):
        RemoteHTCondorCluster.from_name("rjq-000000000000")


def test_a_detached_cluster_left_alone_ends_after_its_idle_timeout(facility, alice):
    cluster = RemoteHTCondorCluster(
        site="T2_LOCAL", shutdown_on_close=False, idle_timeout=5, quiet=True
    )
    cluster.close()
    assert jobs_of(facility, cluster.cluster_id), "detached, not ended"
    wait_until(lambda: not jobs_of(facility, cluster.cluster_id), 60, "ended by itself")


def test_random_lands_where_slots_are_free_and_pins_its_workers_there(facility, alice, tmp_path):
    schedd = sched.locate(facility.collector, facility.schedd_name)
    cpus = facility.site("T2_A").cpus
    filler = python_job(
        "import time; time.sleep(600)",
        tmp_path,
        requirements='TARGET.SiteName == "T2_A"',
        request_cpus=str(cpus),
    )
    filler_id = sched.submit(schedd, filler)
    try:
        wait_until(
            lambda: (
                sched.job_ads(schedd, f"ClusterId == {filler_id}", ["JobStatus"])[0]["JobStatus"]
                == 2
            ),
            60,
            "T2_A is full",
        )
        landed = []
        for _ in range(10):
            with RemoteHTCondorCluster(site="random", resident_worker=False, quiet=True) as cluster:
                landed.append(cluster.site.name)
                ads = jobs_of(facility, cluster.cluster_id, ["MachineAttrSiteName0", "RjqRole"])
                assert [ad["MachineAttrSiteName0"] for ad in ads] == [cluster.site.name]
                if len(landed) == 1:  # its workers go where it landed
                    cluster.scale(1)
                    with Client(cluster) as client:
                        client.wait_for_workers(1, timeout=120)
                    sites = {
                        ad.get("MachineAttrSiteName0")
                        for ad in jobs_of(facility, cluster.cluster_id, ["MachineAttrSiteName0"])
                    }
                    assert sites == {cluster.site.name}
        assert "T2_A" not in landed and len(landed) == 10
    finally:
        sched.remove(schedd, f"ClusterId == {filler_id}", "test done")


def test_a_crashed_scheduler_jobs_stdout_and_stderr_are_in_its_logs(facility, alice):
    cluster = RemoteHTCondorCluster(site="T2_A", resident_worker=False, quiet=True)
    try:
        node = "rjq-pool-t2-a"
        podman("exec", node, "pkill", "-KILL", "-f", "remote_jobqueue.bundle bundle.json")
        wait_until(lambda: cluster.lost, 60, "the client notices the crash")
        logs = cluster.get_logs(cluster=False, workers=False)
        assert "scheduler at tls://" in logs["Scheduler job stderr"]
        # What came back from the spool: its output and its spec, none of its secrets.
        fetched = {path.name for path in cluster._inputs.iterdir()}
        assert {"scheduler.out", "scheduler.err", "bundle.json"} <= fetched
        assert not fetched & {"bearer-token", "cluster-secret", "tls-key.pem"}
        with pytest.raises(ClusterLost):
            cluster.scale(1)
    finally:
        cluster.close()
    wait_until(lambda: not jobs_of(facility, cluster.cluster_id), 60, "nothing left")


def test_clusters_attach_shows_a_detached_cluster_and_shuts_it_down(facility, alice):
    cluster = RemoteHTCondorCluster(site="T2_LOCAL", shutdown_on_close=False, quiet=True)
    cluster.close()
    cluster_id = cluster.cluster_id
    try:
        shown = cli(facility, "alice", "clusters", "attach", cluster_id, "--no-wait")
        assert shown.returncode == 0, shown.stderr
        assert f"{cluster_id} at T2_LOCAL, scheduler job {cluster.job_id}" in shown.stdout
        assert "dashboard: http://127.0.0.1:" in shown.stdout
        assert jobs_of(facility, cluster_id), "attach --no-wait detaches, it does not end it"

        refused = cli(facility, "bob", "clusters", "attach", cluster_id, "--shutdown")
        assert refused.returncode == 1
        assert f"no cluster {cluster_id} of yours is running" in refused.stderr

        ended = cli(facility, "alice", "clusters", "attach", cluster_id, "--shutdown")
        assert ended.returncode == 0 and f"shut {cluster_id} down" in ended.stdout
        wait_until(lambda: not jobs_of(facility, cluster_id), 60, "no job left")
    finally:
        _stop_if_left(cluster_id)
