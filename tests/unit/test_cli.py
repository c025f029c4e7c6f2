"""The command line: thin, readable layers over the modules.

Specification: `sites` lists the catalogue as the notebook names it, or says what is wrong in
it; `gateway` passes its options to the gateway server; `clusters stop` refuses what is not a
cluster id before asking anyone.
"""

from __future__ import annotations

import dask.config
from click.testing import CliRunner

from remote_jobqueue.cli import main


def test_sites_lists_the_catalogue():
    with dask.config.set({"remote-jobqueue.sites": {"T2_A": {"schedd": "hub@x", "cache": "c"}}}):
        result = CliRunner().invoke(main, ["sites"])
    assert result.exit_code == 0
    assert "HTCondor-T2_A" in result.output and "Local" in result.output


def test_sites_names_a_bad_key_of_the_catalogue():
    with dask.config.set({"remote-jobqueue.sites": {"T2_A": {"colector": "c"}}}):
        result = CliRunner().invoke(main, ["sites"])
    assert result.exit_code == 1
    assert "unknown key 'colector' in site 'T2_A'" in result.output


def test_gateway_takes_the_servers_own_options():
    result = CliRunner().invoke(main, ["gateway", "--help"])
    assert result.exit_code == 0
    assert "--host-key" in result.output and "--hub-api-url" in result.output


def test_clusters_stop_refuses_what_is_not_a_cluster_id():
    result = CliRunner().invoke(main, ["clusters", "stop", 'x" || true'])
    assert result.exit_code == 1
    assert "not a cluster id" in result.output
