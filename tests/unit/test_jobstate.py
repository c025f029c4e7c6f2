"""One reading of HTCondor job ads for the client, the bundle and the CLI.

Specification: a spooling hold is not a hold; a hold says its reason, or what its code means
when HTCondor gave no reason; idle says why it does not match; an absent ad means gone; the
constraint names exactly the ClusterIds given.
"""

from __future__ import annotations

from remote_jobqueue.jobstate import JobState, by_cluster_ids, classify


def test_a_job_whose_input_is_being_spooled_is_not_held():
    phase = classify({"ClusterId": 4, "ProcId": 0, "JobStatus": 5, "HoldReasonCode": 16})
    assert phase.state == JobState.IDLE and "spooled" in phase.reason


def test_a_hold_says_its_reason_or_what_its_code_means():
    held = classify({"ClusterId": 4, "ProcId": 1, "JobStatus": 5, "HoldReason": "no image"})
    assert (held.job_id, held.state, held.reason) == ("4.1", JobState.HELD, "no image")
    silent = classify({"ClusterId": 4, "JobStatus": 5, "HoldReason": "", "HoldReasonCode": 1})
    assert silent.reason == (
        "no HoldReason given (HoldReasonCode 1: held by a user or an administrator)"
    )


def test_idle_says_why_and_gone_is_an_end():
    idle = classify({"ClusterId": 4, "JobStatus": 1, "LastRejMatchReason": "no match found"})
    assert (idle.state, idle.reason, idle.alive) == (JobState.IDLE, "no match found", True)
    gone = classify(None, "4.0")
    assert gone.state == JobState.GONE and gone.ended and gone.job_id == "4.0"
    removed = classify({"ClusterId": 4, "JobStatus": 3, "RemoveReason": "by the user"})
    assert removed.ended and removed.reason == "by the user"


def test_the_constraint_names_exactly_our_cluster_ids():
    assert by_cluster_ids([12, 7, 12]) == "ClusterId == 7 || ClusterId == 12"
    assert by_cluster_ids([]) == "false"
