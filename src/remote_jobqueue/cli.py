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


if __name__ == "__main__":
    main()
