"""`remote-jobqueue facility up | down | status | env`: the facility's command line.

The product's command line finds this group by the entry point ``facility`` in the group
``remote_jobqueue.commands``; the console script ``remote-jobqueue-facility`` is the same group.
"""

from __future__ import annotations

import json
import shlex
import sys

import click

from remote_jobqueue.cli import exit_on_error, to_stderr


@click.group()
def facility() -> None:
    """The development facility: HTCondor pool, XRootD origin and caches, OIDC issuer."""


@facility.command("up")
def facility_up() -> None:
    """Bring the facility up (idempotent; builds missing images, reuses cached ones)."""
    from . import lifecycle

    with exit_on_error():
        lifecycle.up(log=to_stderr)


@facility.command("down")
def facility_down() -> None:
    """Stop everything the facility started; leave no process, container, network or namespace."""
    from . import lifecycle

    with exit_on_error():
        lifecycle.down(log=to_stderr)


@facility.command("status")
@click.option("--require-down", is_flag=True, help="fail if anything of the facility is left")
def facility_status(require_down: bool) -> None:
    """Print what is running, as JSON."""
    from . import lifecycle

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
    from . import lifecycle

    with exit_on_error():
        for key, value in lifecycle.env(user=user).items():
            click.echo(f"export {key}={shlex.quote(value)}")


@facility.command("client-config")
def facility_client_config() -> None:
    """Print the facility's public settings for `remote-jobqueue configure` (no secret)."""
    import yaml

    from . import lifecycle

    with exit_on_error():
        click.echo(yaml.safe_dump(lifecycle.public_client_settings()), nl=False)


if __name__ == "__main__":
    facility()


@facility.command("images")
def facility_images() -> None:
    """Build the images of docker/ with podman (cached by content); print name and tag."""
    from . import images

    with exit_on_error():
        for name, tag in images.ensure_images(log=to_stderr).items():
            click.echo(f"{name} {tag}")
