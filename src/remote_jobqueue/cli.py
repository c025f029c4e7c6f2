"""`remote-jobqueue`: the command line of the project.

Subcommands grow with the project; each one is a thin layer over a module that tests can call
directly.
"""

from __future__ import annotations

import json
import shlex
import sys

import click


@click.group()
@click.version_option(package_name="remote-jobqueue")
def main() -> None:
    """Dask clusters at remote HTCondor sites, through an SSH gateway."""


@main.group()
def facility() -> None:
    """The development facility: HTCondor pool, XRootD origin and caches, OIDC issuer."""


def _fail(err: Exception) -> None:
    click.secho(f"error: {err}", fg="red", err=True)
    sys.exit(1)


@facility.command("up")
def facility_up() -> None:
    """Bring the facility up (idempotent; reuses a cached root file system)."""
    from .facility import lifecycle

    try:
        lifecycle.up(log=lambda msg: click.echo(msg, err=True))
    except Exception as err:
        _fail(err)


@facility.command("down")
def facility_down() -> None:
    """Stop everything the facility started; leave no process, mount or namespace."""
    from .facility import lifecycle

    try:
        lifecycle.down(log=lambda msg: click.echo(msg, err=True))
    except Exception as err:
        _fail(err)


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

    try:
        for key, value in lifecycle.env(user=user).items():
            click.echo(f"export {key}={shlex.quote(value)}")
    except Exception as err:
        _fail(err)


@main.command("sites")
def sites_command() -> None:
    """List the sites of the catalogue (Dask config `remote-jobqueue.sites`)."""
    from rich.console import Console
    from rich.table import Table

    from . import sites

    try:
        catalogue = sites.catalogue()
    except Exception as err:
        _fail(err)
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

    try:
        found = list_clusters(site)
    except Exception as err:
        _fail(err)
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

    try:
        removed = stop_cluster(cluster_id, site)
    except Exception as err:
        _fail(err)
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
