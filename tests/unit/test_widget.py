"""The notebook widget of a `RemoteHTCondorCluster`.

Specification: it shows the site, the cluster id, the scheduler job, the status, the dashboard
link, workers/threads/memory, and each worker job's id and state, with the reason of a hold,
escaped (hold reasons come from the site); Scale and Adapt call the cluster with the numbers
typed, and their failures (at once, or later for an async cluster's request) show in the widget;
it refreshes every 2 s on the cluster's loop from attributes alone, and stops with the cluster.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from distributed.core import Status
from tornado.ioloop import IOLoop

from remote_jobqueue.errors import ClusterLost
from remote_jobqueue.progress import StartProgress
from remote_jobqueue.sites import SiteSpec
from remote_jobqueue.widget import CALLBACK_NAME, ClusterView, cluster_widget

HOLD_REASON = "Error from slot1@node: <b>memory</b> exceeded & job held"

REPORT = {
    "target": 3,
    "jobs": {
        "rjq-1": {"job": "12.0", "state": "connected", "reason": "pid 4321"},
        "rjq-2": {"job": "12.1", "state": "idle", "reason": "no match yet"},
        "rjq-3": {"job": "13.0", "state": "held", "reason": HOLD_REASON},
        "rjq-4": {"job": None, "state": "pending", "reason": "being submitted"},
    },
    "holds": [
        {"job": "11.0", "state": "held", "reason": "input <transfer> failed", "name": "rjq-0"},
        {"job": "13.0", "state": "held", "reason": HOLD_REASON, "name": "rjq-3"},
    ],
    "stopped": None,
}


class StubCluster:
    """The attributes the widget reads, and scale/adapt that record what they were asked."""

    def __init__(self, **overrides: Any) -> None:
        self.site = SiteSpec("T2_A", label="Tier-2 <A>")
        self.cluster_id = "rjq-0123456789ab"
        self.job_id: str | None = "42.0"
        self.status = Status.running
        self.lost: str | None = None
        self.progress = StartProgress("cluster rjq-0123456789ab at T2_A", quiet=True)
        self.dashboard_link = "http://127.0.0.1:8787/status"
        self.scheduler_info = {
            "workers": {
                "tls://10.0.0.5:1": {"nthreads": 2, "memory_limit": 2 * 2**30},
                "tls://10.0.0.6:1": {"nthreads": 1, "memory_limit": 2**30},
            }
        }
        self.job_report: dict[str, Any] | None = REPORT
        self._adaptive: Any = None
        self.periodic_callbacks: dict[str, Any] = {}
        self.loop: Any = None
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_with: BaseException | None = None
        self.returns: Any = None
        self.__dict__.update(overrides)

    def scale(self, n: int) -> Any:
        self.calls.append(("scale", {"n": n}))
        if self.fail_with:
            raise self.fail_with
        return self.returns

    def adapt(self, minimum: int, maximum: int) -> Any:
        self.calls.append(("adapt", {"minimum": minimum, "maximum": maximum}))
        if self.fail_with:
            raise self.fail_with
        return self.returns


def shown(view: ClusterView) -> str:
    return view.status.value


def test_it_shows_the_site_the_cluster_and_its_scheduler_job():
    view = ClusterView(StubCluster())
    text = shown(view)
    assert "Tier-2 &lt;A&gt;" in text and "Tier-2 <A>" not in text
    assert "rjq-0123456789ab" in text
    assert "42.0" in text
    assert "href='http://127.0.0.1:8787/status'" in text


def test_it_shows_workers_threads_and_memory_from_scheduler_info():
    text = shown(ClusterView(StubCluster()))
    assert "<th style='text-align:left; padding-right:1em'>Workers</th><td>2</td>" in text
    assert "Threads</th><td>3</td>" in text
    assert "Memory</th><td>3.00 GiB</td>" in text


def test_it_lists_each_worker_job_with_its_id_and_state():
    text = shown(ClusterView(StubCluster()))
    for worker, job, state in [
        ("rjq-1", "12.0", "connected"),
        ("rjq-2", "12.1", "idle"),
        ("rjq-3", "13.0", "held"),
        ("rjq-4", "-", "pending"),
    ]:
        assert f"<td>{worker}</td><td>{job}</td><td>{state}</td>" in text


def test_a_hold_reason_is_shown_escaped_and_only_for_held_jobs():
    text = shown(ClusterView(StubCluster()))
    escaped = "Error from slot1@node: &lt;b&gt;memory&lt;/b&gt; exceeded &amp; job held"
    assert f"<td>13.0</td><td>held</td><td>{escaped}</td>" in text
    assert "<b>memory</b>" not in text
    assert "pid 4321" not in text and "no match yet" not in text


def test_an_earlier_hold_of_a_replaced_job_is_listed_once():
    text = shown(ClusterView(StubCluster()))
    assert "<td>rjq-0</td><td>11.0</td><td>held</td><td>input &lt;transfer&gt; failed</td>" in text
    assert text.count("<td>13.0</td>") == 1


def test_why_no_more_jobs_are_submitted_is_shown():
    report = {**REPORT, "stopped": "3 worker jobs failed in a row <see holds>"}
    text = shown(ClusterView(StubCluster(job_report=report)))
    assert "3 worker jobs failed in a row &lt;see holds&gt;" in text


def test_while_starting_it_shows_where_the_start_is_and_no_jobs_yet():
    cluster = StubCluster(status=Status.starting, job_id=None, job_report=None)
    cluster.scheduler_info = {"workers": {}}
    cluster.progress.update("waiting for the scheduler job", "idle: <no slot>")
    text = shown(ClusterView(cluster))
    assert "waiting for the scheduler job: idle: &lt;no slot&gt;" in text
    assert "Scheduler job</th><td>-</td>" in text
    assert "No worker jobs." in text


def test_a_lost_cluster_says_why():
    cluster = StubCluster(status=Status.failed, lost="the scheduler job was removed <by admin>")
    assert "lost: the scheduler job was removed &lt;by admin&gt;" in shown(ClusterView(cluster))


def test_update_redraws_from_the_cluster_attributes():
    cluster = StubCluster()
    view = ClusterView(cluster)
    cluster.job_report = {
        "jobs": {"rjq-9": {"job": "77.0", "state": "running", "reason": ""}},
        "holds": [],
    }
    cluster.status = Status.closed
    view.update()
    assert "<td>77.0</td><td>running</td>" in shown(view)
    assert "12.0" not in shown(view)
    assert "Status</th><td>closed</td>" in shown(view)


def test_adaptive_bounds_are_shown_while_adapting():
    adaptive = SimpleNamespace(minimum=0, maximum=3, periodic_callback=True)
    text = shown(ClusterView(StubCluster(_adaptive=adaptive)))
    assert "adaptive, 0 to 3 workers" in text


def test_scale_calls_the_cluster_with_the_number_typed():
    cluster = StubCluster()
    view = ClusterView(cluster)
    view.workers.value = 5
    view.scale_button.click()
    assert cluster.calls == [("scale", {"n": 5})]
    assert "asked to scale to 5 workers" in view.message.value


def test_adapt_calls_the_cluster_with_the_bounds_typed():
    cluster = StubCluster()
    view = ClusterView(cluster)
    view.minimum.value, view.maximum.value = 1, 4
    view.adapt_button.click()
    assert cluster.calls == [("adapt", {"minimum": 1, "maximum": 4})]


def test_an_exception_from_scale_shows_as_text_in_the_widget():
    cluster = StubCluster(fail_with=ClusterLost("cluster rjq-0 is gone: <removed>"))
    view = ClusterView(cluster)
    view.workers.value = 2
    view.scale_button.click()  # raises nothing
    assert "could not scale to 2 workers: ClusterLost: cluster rjq-0 is gone: &lt;removed&gt;" in (
        view.message.value
    )


def test_an_exception_from_adapt_shows_as_text_in_the_widget():
    cluster = StubCluster(fail_with=ValueError("minimum (4 jobs) is larger than maximum (1 jobs)"))
    view = ClusterView(cluster)
    view.adapt_button.click()
    assert "could not adapt between 0 and 0 workers: ValueError: minimum (4 jobs)" in (
        view.message.value
    )


async def test_a_failure_of_an_async_request_shows_when_it_fails():
    async def refused() -> None:
        raise RuntimeError("the site said <no>")

    task = asyncio.ensure_future(refused())
    cluster = StubCluster(returns=task)
    view = ClusterView(cluster)
    view.workers.value = 3
    view.scale_button.click()
    assert "asked to scale to 3 workers" in view.message.value
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)  # the done callback
    assert "could not scale to 3 workers: RuntimeError: the site said &lt;no&gt;" in (
        view.message.value
    )


async def test_it_refreshes_every_2_s_on_the_cluster_loop_until_the_cluster_closes():
    cluster = StubCluster(loop=IOLoop.current())
    widget = cluster_widget(cluster)
    await asyncio.sleep(0)  # the loop installs the callback
    callback = cluster.periodic_callbacks[CALLBACK_NAME]
    assert callback.callback_time == 2000 and callback.is_running()
    cluster.job_report = {"jobs": {"rjq-9": {"job": "77.0", "state": "idle"}}, "holds": []}
    callback.callback()
    assert "<td>77.0</td><td>idle</td>" in widget.children[0].value
    cluster.status = Status.closed
    callback.callback()
    assert not callback.is_running()


def test_the_scaling_controls_are_titled_as_in_distributed():
    view = ClusterView(StubCluster())
    titles = [view.accordion.get_title(i) for i in range(2)]
    assert titles == ["Manual scaling", "Adaptive scaling"]
    assert view.widget.children == (view.status, view.accordion, view.message)
