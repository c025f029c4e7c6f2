"""What an HTCondor job ad means for us: the one classifier of job states.

The client's scheduler job, the bundle's worker jobs and the CLI all ask the same questions of a
job ad (is it waiting, and why; running; held, and why; gone), so they ask them here. The
transient hold of a spooled job ("Spooling input data files", code 16) is not a hold: the job is
still on its way to the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

#: Hold reason code while a spooled job's input is still on its way: not a real hold.
SPOOLING_HOLD_CODE = 16

#: What common HoldReasonCodes mean, for holds that come without a HoldReason (a hold through
#: the 25.x bindings on a 23.x schedd leaves it empty).
HOLD_CODES = {
    1: "held by a user or an administrator",
    3: "held by the job's periodic_hold policy",
    6: "the job could not be started on the execute node",
    12: "output file transfer failed",
    13: "input file transfer failed",
    15: "submitted on hold",
    21: "a job policy expression could not be evaluated",
    26: "the input files are larger than allowed",
    34: "the job used more memory than it asked for",
}

#: The attributes `classify` reads: ask the schedd for these (and no more) in status queries.
STATUS_ATTRIBUTES = (
    "ClusterId",
    "ProcId",
    "JobStatus",
    "HoldReason",
    "HoldReasonCode",
    "LastRejMatchReason",
    "RemoveReason",
    "Owner",
)


class JobStatus(IntEnum):
    """HTCondor's ``JobStatus`` codes."""

    IDLE = 1
    RUNNING = 2
    REMOVED = 3
    COMPLETED = 4
    HELD = 5
    TRANSFERRING_OUTPUT = 6
    SUSPENDED = 7


class JobState(StrEnum):
    """What a job is doing, as a user would say it."""

    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    SUSPENDED = "suspended"
    REMOVED = "removed"
    COMPLETED = "completed"
    #: No longer in the queue (our jobs leave it when they end: ``leave_in_queue = false``).
    GONE = "gone"


@dataclass(frozen=True)
class JobPhase:
    """A job's state and, where HTCondor gives one, the reason for it."""

    job_id: str
    state: JobState
    reason: str = ""
    owner: str = ""

    @property
    def ended(self) -> bool:
        return self.state in (JobState.REMOVED, JobState.COMPLETED, JobState.GONE)

    @property
    def alive(self) -> bool:
        return not self.ended

    def __str__(self) -> str:
        return f"{self.state}: {self.reason}" if self.reason else str(self.state)

    def to_dict(self) -> dict[str, str]:
        return {"job": self.job_id, "state": str(self.state), "reason": self.reason}


def job_id(ad: Mapping[str, Any]) -> str:
    return f"{ad['ClusterId']}.{ad.get('ProcId', 0)}"


def classify(ad: Mapping[str, Any] | None, job: str = "?") -> JobPhase:
    """The phase of the job of ``ad``; ``None`` means it has left the queue."""
    if ad is None:
        return JobPhase(job, JobState.GONE, "it is no longer in the queue")
    job = job_id(ad) if "ClusterId" in ad else job
    owner = str(ad.get("Owner", ""))
    status = int(ad.get("JobStatus", 0))
    if status == JobStatus.HELD:
        if ad.get("HoldReasonCode") == SPOOLING_HOLD_CODE:
            return JobPhase(job, JobState.IDLE, "its input files are being spooled", owner)
        return JobPhase(job, JobState.HELD, _hold_reason(ad), owner)
    if status == JobStatus.IDLE:
        return JobPhase(job, JobState.IDLE, str(ad.get("LastRejMatchReason", "")), owner)
    if status in (JobStatus.RUNNING, JobStatus.TRANSFERRING_OUTPUT):
        return JobPhase(job, JobState.RUNNING, "", owner)
    if status == JobStatus.SUSPENDED:
        return JobPhase(job, JobState.SUSPENDED, "", owner)
    if status == JobStatus.REMOVED:
        return JobPhase(job, JobState.REMOVED, str(ad.get("RemoveReason", "")), owner)
    if status == JobStatus.COMPLETED:
        return JobPhase(job, JobState.COMPLETED, "", owner)
    return JobPhase(job, JobState.GONE, f"unknown JobStatus {status}", owner)


def _hold_reason(ad: Mapping[str, Any]) -> str:
    reason = str(ad.get("HoldReason") or "").strip()
    if reason:
        return reason
    code = ad.get("HoldReasonCode")
    meaning = HOLD_CODES.get(int(code), "") if code is not None else ""
    return f"no HoldReason given (HoldReasonCode {code}{': ' + meaning if meaning else ''})"


def by_cluster_ids(cluster_ids: set[int] | list[int]) -> str:
    """A constraint naming exactly these ClusterIds: the jobs *we* submitted, nobody's tags."""
    return " || ".join(f"ClusterId == {int(c)}" for c in sorted(set(cluster_ids))) or "false"
