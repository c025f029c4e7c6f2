"""Talking to a site's schedd with the HTCondor bindings only (no command-line tools).

Outside the pool `htcondor2.Schedd()` cannot find a "local" schedd, so every schedd is located
through the collector by name. Failures become exceptions that say what to check.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import htcondor2

from .jobstate import (
    STATUS_ATTRIBUTES,
    JobPhase,
    JobState,
    JobStatus,
    by_cluster_ids,
    classify,
    job_id,
)

__all__ = ["JobStatus", "ScheddUnreachable", "locate", "phases", "remove", "submit"]


class ScheddUnreachable(ConnectionError):
    """The collector or the schedd does not answer (or refuses us)."""


class InvalidSubmission(ValueError):
    """HTCondor refused the submit description itself."""


class JobHeld(RuntimeError):
    """A job went on hold; ``reason`` is HTCondor's HoldReason."""

    def __init__(self, job_id: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"job {job_id} is held: {reason}")
        self.job_id, self.reason, self.code = job_id, reason, code


def use_config(path: str) -> None:
    """Point the bindings at another client configuration (they read it once, at import)."""
    import os

    os.environ["CONDOR_CONFIG"] = path
    htcondor2.reload_config()


def locate(collector: str | None, schedd_name: str | None) -> htcondor2.Schedd:
    """Return a Schedd located through ``collector`` (None: the configured COLLECTOR_HOST)."""
    return htcondor2.Schedd(locate_ad(collector, schedd_name))


def locate_ad(collector: str | None, schedd_name: str | None) -> htcondor2.classad.ClassAd:
    """The schedd's location ad (for `htcondor2.Schedd`, or `htcondor2.ping`)."""
    try:
        coll = htcondor2.Collector(collector) if collector else htcondor2.Collector()
        if schedd_name:
            ad = coll.locate(htcondor2.DaemonType.Schedd, schedd_name)
        else:
            ads = coll.locateAll(htcondor2.DaemonType.Schedd)
            if not ads:
                raise ScheddUnreachable(
                    f"the collector {collector or '(configured)'} knows no schedd"
                )
            ad = ads[0]
    except ScheddUnreachable:
        raise
    except Exception as err:  # htcondor2 raises HTCondorException / ValueError
        where = collector or htcondor2.param.get("COLLECTOR_HOST", "(unset COLLECTOR_HOST)")
        raise ScheddUnreachable(
            f"cannot locate schedd {schedd_name or '(any)'} through the collector at {where}: "
            f"{err}. "
            "Check CONDOR_CONFIG, the collector address and your token."
        ) from err
    return ad


def submit(
    schedd: htcondor2.Schedd,
    description: dict[str, str],
    count: int = 1,
    itemdata: list[dict[str, str]] | None = None,
) -> int:
    """Submit with spooling (the client shares no file system with the site); return ClusterId.

    With ``itemdata``, one job per item (ProcId in order), each item's keys as submit variables.
    """
    try:
        job = htcondor2.Submit(description)
        if itemdata:
            result = schedd.submit(job, spool=True, itemdata=iter(itemdata))
        else:
            result = schedd.submit(job, count=count, spool=True)
        schedd.spool(result)
    except Exception as err:
        if "Failed to create job ad" in str(err):
            raise InvalidSubmission(f"the schedd refused the job description: {err}") from err
        raise ScheddUnreachable(f"submitting to the schedd failed: {err}") from err
    return result.cluster()


def job_ads(
    schedd: htcondor2.Schedd, constraint: str, projection: Iterable[str] = ()
) -> list[htcondor2.classad.ClassAd]:
    return list(schedd.query(constraint, projection=[*STATUS_ATTRIBUTES, *projection]))


def phases(schedd: htcondor2.Schedd, cluster_ids: Iterable[int]) -> dict[str, JobPhase]:
    """The phase of every job of these ClusterIds still in the queue: one query."""
    ids = set(cluster_ids)
    if not ids:
        return {}
    return {job_id(ad): classify(ad) for ad in job_ads(schedd, by_cluster_ids(ids))}


def wait_for_status(
    schedd: htcondor2.Schedd,
    cluster: int,
    wanted: set[JobState] | set[JobStatus],
    timeout: float,
    poll: float = 0.25,
) -> JobPhase | None:
    """Wait until every job of ``cluster`` is in one of ``wanted`` (or gone from the queue).

    Returns the last phase seen (None once the cluster has left the queue). A hold not in
    ``wanted`` raises :class:`JobHeld`.
    """
    wanted = {classify({"JobStatus": w}).state if isinstance(w, JobStatus) else w for w in wanted}
    deadline = time.monotonic() + timeout
    while True:
        seen = list(phases(schedd, [cluster]).values())
        if not seen:
            return None
        for phase in seen:
            if phase.state == JobState.HELD and JobState.HELD not in wanted:
                raise JobHeld(phase.job_id, phase.reason)
        if all(phase.state in wanted for phase in seen):
            return seen[-1]
        if time.monotonic() > deadline:
            states = sorted({str(phase.state) for phase in seen})
            raise TimeoutError(f"cluster {cluster} still {states} after {timeout:.0f} s")
        time.sleep(poll)


def remove(
    schedd: htcondor2.Schedd, constraint: str, reason: str = "removed by remote-jobqueue"
) -> None:
    schedd.act(htcondor2.JobAction.Remove, constraint, reason=reason)
