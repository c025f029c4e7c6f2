"""A live notebook view of a `RemoteHTCondorCluster`: where it runs, its jobs, and scaling.

Modelled on `distributed.deploy.cluster.Cluster._widget` (the same manual and adaptive scaling
controls, refreshed by a `PeriodicCallback` on the cluster's loop, stopped when the cluster
closes), with what only this cluster knows: the site, the scheduler job, and each worker job's
state as the bundle last reported it, holds with their reasons.

The refresh reads attributes only (``scheduler_info``, ``job_report``, ``progress``), which the
cluster keeps current by itself; it never asks the site anything, so it cannot block the loop.
Everything shown is escaped: hold reasons and error messages come from the site.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from dask.utils import format_bytes
from distributed.core import Status
from ipywidgets import HTML, Accordion, Button, HBox, IntText, Layout, VBox, Widget
from tornado.ioloop import PeriodicCallback

logger = logging.getLogger("remote_jobqueue")

#: Seconds between refreshes.
INTERVAL = 2.0
#: The widget's key in ``cluster.periodic_callbacks`` (`Cluster` stops them all on close).
CALLBACK_NAME = "remote-jobqueue-widget"
#: Past holds listed besides the current jobs (the bundle keeps its latest 20).
HOLDS_SHOWN = 5

_TH = "<th style='text-align:left; padding-right:1em'>"
_ERROR_STYLE = "color: var(--jp-error-color1, #d32f2f)"


def cluster_widget(cluster: Any, interval: float = INTERVAL) -> Widget:
    """The cluster's widget, refreshed every ``interval`` seconds on the cluster's loop."""
    view = ClusterView(cluster)

    def tick() -> None:
        if cluster.status == Status.closed:
            callback.stop()
        view.update()

    callback = PeriodicCallback(tick, interval * 1000)

    def install() -> None:
        # On the loop's own thread: `Cluster.close` stops what it finds in periodic_callbacks.
        cluster.periodic_callbacks[CALLBACK_NAME] = callback
        callback.start()

    cluster.loop.add_callback(install)
    return view.widget


class ClusterView:
    """The widget's parts and what its buttons do; `update` redraws it from the cluster."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        layout = Layout(width="150px")
        self.status = HTML()
        self.workers = IntText(0, description="Workers", layout=layout)
        self.scale_button = Button(description="Scale", layout=layout)
        self.minimum = IntText(0, description="Minimum", layout=layout)
        self.maximum = IntText(0, description="Maximum", layout=layout)
        self.adapt_button = Button(description="Adapt", layout=layout)
        self.message = HTML()
        self.accordion = Accordion(
            [
                HBox([self.workers, self.scale_button]),
                HBox([self.minimum, self.maximum, self.adapt_button]),
            ],
            layout=Layout(min_width="500px"),
        )
        self.accordion.selected_index = None
        self.accordion.set_title(0, "Manual scaling")
        self.accordion.set_title(1, "Adaptive scaling")
        self.scale_button.on_click(lambda _button: self.scale())
        self.adapt_button.on_click(lambda _button: self.adapt())
        self.widget = VBox([self.status, self.accordion, self.message])
        self.update()

    def update(self) -> None:
        try:
            self.status.value = status_html(self.cluster)
        except Exception:  # a half-started cluster, say: keep the last view, try again later
            logger.debug("cannot redraw the cluster widget", exc_info=True)

    def scale(self) -> None:
        n = self.workers.value
        self._call(f"scale to {n} workers", lambda: self.cluster.scale(n))

    def adapt(self) -> None:
        lo, hi = self.minimum.value, self.maximum.value
        self._call(
            f"adapt between {lo} and {hi} workers",
            lambda: self.cluster.adapt(minimum=lo, maximum=hi),
        )

    def _call(self, what: str, request: Callable[[], Any]) -> None:
        """Run a button's request; its failure, now or later (async clusters), shows here."""
        self.message.value = escape(f"asked to {what}")
        try:
            result = request()
        except Exception as err:
            self._failed(what, err)
        else:
            pending = getattr(result, "request", result)  # adapt's handle carries its request
            if isinstance(pending, asyncio.Future):
                pending.add_done_callback(lambda done: self._settled(what, done))
        self.update()

    def _settled(self, what: str, done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is not None:
            self._failed(what, done.exception())

    def _failed(self, what: str, err: BaseException) -> None:
        text = f"could not {what}: {type(err).__name__}: {err}"
        self.message.value = f"<span style='{_ERROR_STYLE}'>{escape(text)}</span>"


# What it shows ------------------------------------------------------------------------
def status_html(cluster: Any) -> str:
    """The cluster, its workers and its worker jobs, as escaped HTML."""
    title = f"<h4 style='margin:0.3em 0'>{escape(type(cluster).__name__)}</h4>"
    return title + _table(summary_rows(cluster)) + _jobs_table(job_rows(cluster.job_report))


def summary_rows(cluster: Any) -> list[tuple[str, str]]:
    """(label, HTML) pairs: site, ids, status, dashboard, workers, threads, memory, scaling."""
    workers = (cluster.scheduler_info or {}).get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    memory = sum(w.get("memory_limit") or 0 for w in workers.values())
    report = cluster.job_report or {}
    rows = [
        ("Site", escape(cluster.site.display_name)),
        ("Cluster", escape(cluster.cluster_id)),
        ("Scheduler job", escape(cluster.job_id or "-")),
        ("Status", escape(_status(cluster))),
        ("Dashboard", _link(cluster.dashboard_link)),
        ("Workers", str(len(workers))),
        ("Threads", str(threads)),
        ("Memory", escape(format_bytes(memory))),
        ("Scaling", escape(_scaling(cluster))),
    ]
    if report.get("stopped"):
        rows.append(("Not replacing", escape(report["stopped"])))
    return rows


def job_rows(report: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """(worker, job, state, hold reason) of each worker job, then of recent holds of others."""
    if not report:
        return []
    rows = []
    for name, entry in sorted(report.get("jobs", {}).items()):
        state = str(entry.get("state", "?"))
        why = entry.get("reason", "") if state == "held" else ""
        rows.append((str(name), str(entry.get("job") or "-"), state, str(why or "")))
    listed = {job for _name, job, _state, _why in rows}
    for hold in report.get("holds", [])[-HOLDS_SHOWN:]:
        if str(hold.get("job")) not in listed:
            reason = str(hold.get("reason") or "")
            rows.append((str(hold.get("name", "-")), str(hold.get("job")), "held", reason))
    return rows


def _status(cluster: Any) -> str:
    """Why it is gone, else running or closed, else where its start is (``progress``)."""
    if cluster.lost:
        return f"lost: {cluster.lost}"
    if cluster.status in (Status.running, Status.closing, Status.closed):
        return cluster.status.name
    return str(cluster.progress)


def _scaling(cluster: Any) -> str:
    adaptive = getattr(cluster, "_adaptive", None)
    if adaptive is not None and adaptive.periodic_callback:
        return f"adaptive, {adaptive.minimum} to {adaptive.maximum} workers"
    return "manual"


def _link(url: str | None) -> str:
    if not url:
        return "-"
    return f"<a href='{escape(url, quote=True)}' target='_blank'>{escape(url)}</a>"


def _table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr>{_TH}{escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _jobs_table(rows: list[tuple[str, str, str, str]]) -> str:
    if not rows:
        return "<p>No worker jobs.</p>"
    head = "".join(f"{_TH}{h}</th>" for h in ("Worker", "Job", "State", "Hold reason"))
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<h5 style='margin:0.5em 0 0.2em'>Worker jobs</h5><table><tr>{head}</tr>{body}</table>"
