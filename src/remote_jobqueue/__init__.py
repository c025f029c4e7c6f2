"""Dask clusters at remote HTCondor sites, reached through an SSH gateway."""

# Registers the Dask config defaults, and names `configure`'s HTCondor client configuration
# before anything imports the bindings.
from . import config as _config  # noqa: F401
from .cluster import RemoteHTCondorCluster
from .errors import (
    ClusterLost,
    GatewayError,
    ImpossibleResources,
    InvalidSettings,
    RemoteJobqueueError,
    SchedulerJobHeld,
    StartTimeout,
    UnknownSite,
    VersionMismatch,
)

__version__ = "0.1.0"

__all__ = [
    "ClusterLost",
    "GatewayError",
    "ImpossibleResources",
    "InvalidSettings",
    "RemoteHTCondorCluster",
    "RemoteJobqueueError",
    "SchedulerJobHeld",
    "StartTimeout",
    "UnknownSite",
    "VersionMismatch",
]
