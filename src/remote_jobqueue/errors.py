"""What can go wrong when starting or running a remote cluster, each with its own exception.

Every message says what happened and what to do, so a notebook user can act on it.
"""

from __future__ import annotations


class RemoteJobqueueError(RuntimeError):
    """Base of every error this package raises on purpose."""


class UnknownSite(RemoteJobqueueError, KeyError):
    def __init__(self, site: str, known: list[str]) -> None:
        self.site, self.known = site, known
        super().__init__(
            f"unknown site {site!r}; known sites: {', '.join(known) or '(none configured)'} "
            "(configure more in the Dask config under remote-jobqueue.sites)"
        )

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.args[0]


class InvalidSettings(RemoteJobqueueError, ValueError):
    """Settings that `remote-jobqueue-schema.yaml` refuses: an unknown key, an impossible value.

    ``problems`` holds one line per refused key, each naming the key, its value and what is
    allowed; the message is all of them.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "".join(f"\n  - {p}" for p in problems)
        super().__init__(problems[0] if len(problems) == 1 else f"invalid settings:{lines}")


class ImpossibleResources(RemoteJobqueueError, ValueError):
    """No slot at the site could ever run a job of this size."""


class SchedulerJobHeld(RemoteJobqueueError):
    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id, self.reason = job_id, reason
        super().__init__(f"the scheduler job {job_id} was held by HTCondor: {reason}")


class StartTimeout(RemoteJobqueueError, TimeoutError):
    """The cluster did not come up in time; the message says where it stopped and why."""


class ClusterLost(RemoteJobqueueError):
    """The scheduler job ended (removed, held, or the site went away) while the cluster ran."""


class GatewayError(RemoteJobqueueError):
    """The SSH gateway refused us or cannot be reached."""


class VersionMismatch(RemoteJobqueueError):
    """The site's Python or Dask stack differs from the client's (see `versions.py`)."""


class ClusterNotFound(RemoteJobqueueError, LookupError):
    """No cluster of that id *of yours* runs: another user's is as invisible as none."""
