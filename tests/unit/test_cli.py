"""The command line: thin, readable layers over the modules.

Specification: `sites` lists the catalogue as the notebook names it, or says what is wrong in
it; `gateway` passes its options to the gateway server; `clusters stop` refuses what is not a
cluster id before asking anyone. Other distributions add commands by entry point (the
facility's `facility` group): loaded by name, never in place of the product's own, and one that
cannot be loaded only costs a warning.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

import click
import dask.config
from click.testing import CliRunner

from remote_jobqueue import cli
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


@click.command("hello")
def hello_command():
    """Say hello (a plugin's command)."""
    click.echo("hello from a plugin")


def _entry_points(monkeypatch, *points: tuple[str, str]) -> None:
    """The entry points of `cli.COMMANDS_GROUP` are ``points`` ((name, "module:attr") pairs)."""
    found = [EntryPoint(name, value, cli.COMMANDS_GROUP) for name, value in points]
    monkeypatch.setattr(
        cli, "entry_points", lambda group: found if group == cli.COMMANDS_GROUP else []
    )


def test_commands_of_other_distributions_come_from_entry_points(monkeypatch):
    _entry_points(monkeypatch, ("hello", f"{__name__}:hello_command"))
    assert "hello" in CliRunner().invoke(main, ["--help"]).output
    result = CliRunner().invoke(main, ["hello"])
    assert result.exit_code == 0
    assert result.output == "hello from a plugin\n"


def test_a_plugin_never_replaces_or_breaks_the_products_commands(monkeypatch):
    _entry_points(
        monkeypatch,
        ("sites", f"{__name__}:hello_command"),
        ("broken", "no_such_module_anywhere:command"),
    )
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "warning: command 'broken' (no_such_module_anywhere:command) cannot be loaded" in (
        result.output
    )
    assert "broken" not in result.output.split("Commands:")[1]
    result = CliRunner().invoke(main, ["broken"])
    assert result.exit_code == 2 and "No such command 'broken'" in result.output
    with dask.config.set({"remote-jobqueue.sites": {"T2_A": {"schedd": "hub@x", "cache": "c"}}}):
        assert "HTCondor-T2_A" in CliRunner().invoke(main, ["sites"]).output


def test_without_the_facility_distribution_there_is_no_facility_command(monkeypatch):
    _entry_points(monkeypatch)
    result = CliRunner().invoke(main, ["facility", "up"])
    assert result.exit_code == 2 and "No such command 'facility'" in result.output


def test_the_facility_distribution_adds_remote_jobqueue_facility(monkeypatch):
    """What ``facility/pyproject.toml`` declares: ``facility = "rjq_facility.cli:facility"``."""
    _entry_points(monkeypatch, ("facility", "rjq_facility.cli:facility"))
    result = CliRunner().invoke(main, ["facility", "--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "status", "env"):
        assert f"  {command} " in result.output
    result = CliRunner().invoke(main, ["facility", "env", "--user", "mallory"])
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown user 'mallory'")
