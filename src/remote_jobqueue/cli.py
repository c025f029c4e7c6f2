"""`remote-jobqueue`: the command line of the project.

Subcommands grow with the project; each one is a thin layer over a module that tests can call
directly.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from collections.abc import Iterator

import click


@click.group()
@click.version_option(package_name="remote-jobqueue")
def main() -> None:
    """Dask clusters at remote HTCondor sites, through an SSH gateway."""


@main.group()
def facility() -> None:
    """The development facility: HTCondor pool, XRootD origin and caches, OIDC issuer."""


@contextlib.contextmanager
def _exit_on_error() -> Iterator[None]:
    """An error inside ends the command with one red ``error:`` line and exit status 1: what
    fails here (no facility, no token, an unknown site) is for the user to fix, and a traceback
    would only bury the reason."""
    try:
        yield
    except Exception as err:
        click.secho(f"error: {err}", fg="red", err=True)
        sys.exit(1)


def _to_stderr(msg: str) -> None:
    """Progress goes to stderr, so that stdout stays what the command prints."""
    click.echo(msg, err=True)


@facility.command("up")
def facility_up() -> None:
    """Bring the facility up (idempotent; reuses a cached root file system)."""
    from .facility import lifecycle

    with _exit_on_error():
        lifecycle.up(log=_to_stderr)


@facility.command("down")
def facility_down() -> None:
    """Stop everything the facility started; leave no process, mount or namespace."""
    from .facility import lifecycle

    with _exit_on_error():
        lifecycle.down(log=_to_stderr)


@facility.command("status")
@click.option("--require-down", is_flag=True, help="fail if anything of the facility is left")
def facility_status(require_down: bool) -> None:
    """Print what is running, as JSON."""
    from .facility import lifecycle

    if require_down:
        left = lifecycle.leftovers()
        for item in left:
            click.echo(f"left behind: {item}", err=True)
        sys.exit(1 if left else 0)
    click.echo(json.dumps(lifecycle.status(), indent=2))


@facility.command("env")
@click.option("--user", default="alice", show_default=True, help="whose client settings")
def facility_env(user: str) -> None:
    """Print `export` lines for a client of the facility (eval them in a shell)."""
    from .facility import lifecycle

    with _exit_on_error():
        for key, value in lifecycle.env(user=user).items():
            click.echo(f"export {key}={shlex.quote(value)}")


@main.command("sites")
def sites_command() -> None:
    """List the sites of the catalogue (Dask config `remote-jobqueue.sites`)."""
    from rich.console import Console
    from rich.table import Table

    from . import sites

    with _exit_on_error():
        catalogue = sites.catalogue()
    table = Table("site", "shown as", "schedd", "cache", "gateway")
    for name, spec in catalogue.items():
        row = (spec.schedd, spec.cache, spec.gateway)
        table.add_row(name, spec.display_name, *(value or "" for value in row))
    Console().print(table)


@main.group()
def clusters() -> None:
    """Your clusters at the sites: list them, stop one a notebook left behind."""


@clusters.command("ls")
@click.option("--site", help="only this site (default: every site of the catalogue)")
def clusters_ls(site: str | None) -> None:
    """List your clusters: scheduler job, its state, worker jobs, age."""
    from rich.console import Console
    from rich.table import Table

    from .clusters import list_clusters

    with _exit_on_error():
        found = list_clusters(site)
    table = Table("cluster", "site", "scheduler job", "state", "worker jobs", "held", "age")
    for info in found:
        table.add_row(
            info.cluster_id,
            info.site,
            info.scheduler_job or "-",
            info.scheduler_state,
            str(info.worker_jobs),
            "\n".join(info.held_workers) or "-",
            f"{info.age_seconds / 60:.0f} min",
        )
    Console().print(table)


@clusters.command("stop")
@click.argument("cluster_id")
@click.option("--site", help="where it runs (default: look at every site)")
def clusters_stop(cluster_id: str, site: str | None) -> None:
    """Remove every job of CLUSTER_ID (yours only)."""
    from .clusters import stop_cluster

    with _exit_on_error():
        removed = stop_cluster(cluster_id, site)
    click.echo(f"removed {removed} job(s) of {cluster_id}")


@main.command(
    "gateway",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def gateway_command(ctx: click.Context) -> None:
    """Run the SSH gateway (`remote-jobqueue gateway --help` for its options)."""
    from .gateway.cli import main as gateway_main

    sys.exit(gateway_main(ctx.args))


if __name__ == "__main__":
    main()
