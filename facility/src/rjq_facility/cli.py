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


@facility.command("images")
def facility_images() -> None:
    """Build the images of docker/ with podman (cached by content); print name and tag."""
    from . import images

    with exit_on_error():
        for name, tag in images.ensure_images(log=to_stderr).items():
            click.echo(f"{name} {tag}")


@facility.command("data")
@click.option(
    "--topology",
    type=click.Choice(["origin", "near-site", "hierarchical"]),
    help="how the sites' jobs reach the origin (the site catalogue's caches)",
)
@click.option(
    "--lazy",
    "lazy",
    multiple=True,
    metavar="CACHE",
    help="a cache that reads blocks on demand (repeat; the others prefetch files)",
)
@click.option("--prefetch-all", is_flag=True, help="every cache prefetches whole files")
@click.option("--wan/--no-wan", default=None, help="rate-limit the origin's and sites' links")
@click.option("--tokens/--no-tokens", default=None, help="reads need a WLCG token (ztn, TLS)")
@click.option("--origin-rate", help="the origin's link, as tc says it (200mbit)")
@click.option("--site-rate", help="each remote site's downlink (1gbit)")
def facility_data(
    topology: str | None,
    lazy: tuple[str, ...],
    prefetch_all: bool,
    wan: bool | None,
    tokens: bool | None,
    origin_rate: str | None,
    site_rate: str | None,
) -> None:
    """Show or change how data reaches the sites: topology, prefetch, WAN (prints JSON).

    After a change of topology, clients take the new catalogue with `remote-jobqueue configure`.
    """
    from . import lifecycle

    if prefetch_all and lazy:
        raise click.UsageError("--lazy and --prefetch-all contradict each other: pick one")
    with exit_on_error():
        changes = {
            "topology": topology,
            "wan": wan,
            "tokens": tokens,
            "origin_rate": origin_rate,
            "site_rate": site_rate,
            "lazy": () if prefetch_all else (lazy or None),
        }
        if any(v is not None for v in changes.values()):
            result = lifecycle.set_data_paths(log=to_stderr, **changes)
        else:
            result = lifecycle.data_status(lifecycle.FacilityConfig())
        click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    facility()
