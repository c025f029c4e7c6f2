"""Dask clusters at remote HTCondor sites, reached through an SSH gateway."""

__version__ = "0.1.0"
