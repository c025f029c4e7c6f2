"""`remote-jobqueue`: the command line of the project.

Subcommands grow with the project; each one is a thin layer over a module that tests can call
directly. Other distributions add subcommands through entry points (`COMMANDS_GROUP`): the
development facility's `remote-jobqueue facility ...` comes from ``remote-jobqueue-facility``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points

import click

#: Entry-point group of extra subcommands other distributions add (each a `click.Command`);
#: the development facility's `facility` group is one.
COMMANDS_GROUP = "remote_jobqueue.commands"


class _Main(click.Group):
    """The top-level group: its own commands, then those of the `COMMANDS_GROUP` entry points.

    An entry point is loaded only when its command is listed or run, and its own commands win
    over a plugin's of the same name. One that cannot be loaded is left out with a warning, so
    a broken plugin never breaks the commands of the product.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugin_entry_points()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry_point = _plugin_entry_points().get(cmd_name)
        if entry_point is None:
            return None
        try:
            command = entry_point.load()
        except Exception as err:
            click.secho(
                f"warning: command {cmd_name!r} ({entry_point.value}) cannot be loaded: {err}",
                fg="yellow",
                err=True,
            )
            return None
        if not isinstance(command, click.Command):
            click.secho(
                f"warning: {entry_point.value} is not a click command; {cmd_name!r} left out",
                fg="yellow",
                err=True,
            )
            return None
        return command


def _plugin_entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}


@click.group(cls=_Main)
@click.version_option(package_name="remote-jobqueue")
def main() -> None:
    """Dask clusters at remote HTCondor sites, through an SSH gateway."""


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """An error inside ends the command with one red ``error:`` line and exit status 1: what
    fails here (no facility, no token, an unknown site) is for the user to fix, and a traceback
    would only bury the reason. Public: subcommands of other distributions use it too."""
    try:
        yield
    except Exception as err:
        click.secho(f"error: {err}", fg="red", err=True)
        sys.exit(1)


def to_stderr(msg: str) -> None:
    """Progress goes to stderr, so that stdout stays what the command prints."""
    click.echo(msg, err=True)


@main.command("sites")
def sites_command() -> None:
    """List the sites of the catalogue (Dask config `remote-jobqueue.sites`)."""
    from rich.console import Console
    from rich.table import Table

    from . import sites

    with exit_on_error():
        catalogue = sites.catalogue()
    table = Table("site", "shown as", "schedd", "cache", "gateway")
    for name, spec in catalogue.items():
        row = (spec.schedd, spec.cache, spec.gateway)
        table.add_row(name, spec.display_name, *(value or "" for value in row))
    Console().print(table)


@main.command("login")
@click.option(
    "--issuer", help="the OIDC issuer's URL (default: Dask config remote-jobqueue.issuer)"
)
@click.option("--scope", help="the scopes to ask for, space-separated (default: the issuer's)")
@click.option(
    "--audience",
    multiple=True,
    help="an audience of the token (repeatable; default: login-audience)",
)
@click.option("--client-id", default="remote-jobqueue", show_default=True, help="the OIDC client")
def login_command(
    issuer: str | None, scope: str | None, audience: tuple[str, ...], client_id: str
) -> None:
    """Log in with a browser (on any device) and store the token where every tool finds it."""
    from . import config
    from .errors import RemoteJobqueueError
    from .login import login

    with exit_on_error():
        issuer = issuer or config.get("issuer")
        if not issuer:
            raise RemoteJobqueueError("which issuer? Pass --issuer or set remote-jobqueue.issuer")
        audiences = list(audience) or list(config.get("login-audience") or ())
        path = login(issuer, client_id, scope, audiences, show=to_stderr)
    click.echo(f"logged in: token in {path}")


@main.command("logout")
def logout_command() -> None:
    """Revoke the stored refresh token and delete what `login` stored."""
    from .login import logout

    with exit_on_error():
        logout(show=click.echo)


@main.command("whoami")
@click.option("--timeout", default=10.0, show_default=True, help="seconds for each question")
def whoami_command(timeout: float) -> None:
    """Who your token says you are, and who the gateway and the schedd take you for."""
    from .whoami import report

    token_ok = True
    for answer in report(timeout):
        click.echo(str(answer))
        if answer.what.startswith("token"):
            token_ok = answer.ok
    if not token_ok:
        sys.exit(1)


@main.command("configure")
@click.argument("source")
def configure_command(source: str) -> None:
    """Take a facility's public settings (a file or an http(s) URL): its sites, issuer and
    pool, written as your Dask and HTCondor client settings. Then `remote-jobqueue login`."""
    from . import configure

    with exit_on_error():
        written = configure.write(configure.load(source))
    for path in written:
        click.echo(f"wrote {path}")


@main.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--site", required=True, help="where the cluster runs (a catalogue name)")
@click.option("--workers", type=int, default=1, show_default=True, help="Dask workers")
@click.option("--cores", type=int, help="cores per worker job")
@click.option("--memory", help='memory per worker job ("2 GiB")')
@click.option("--wall-time", type=float, help="seconds after which the script is stopped")
@click.option(
    "--linger",
    type=float,
    default=300,
    show_default=True,
    help="seconds the cluster stays after the script, for its logs and files",
)
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_command(
    site: str,
    workers: int,
    cores: int | None,
    memory: str | None,
    wall_time: float | None,
    linger: float,
    script: str,
    args: tuple[str, ...],
) -> None:
    """Run SCRIPT [ARGS] next to the scheduler of a new cluster at SITE, as a Dask client of
    it (`Client()` finds it): it goes on when this terminal closes. Its output shows here
    until it ends (Ctrl-C detaches; `clusters logs ID --follow` reattaches), and the exit
    status is the script's."""
    from .cluster import RemoteHTCondorCluster

    driver = {"script": script, "args": list(args), "wall_time": wall_time, "linger": linger}
    with exit_on_error():
        cluster = RemoteHTCondorCluster(
            site=site,
            cores=cores,
            memory=memory,
            n_workers=workers,
            shutdown_on_close=False,
            driver=driver,
            quiet=True,
        )
    click.echo(f"{cluster.cluster_id}: running {script} at {cluster.site.name}")
    to_stderr(f"Ctrl-C detaches; `remote-jobqueue clusters logs {cluster.cluster_id} --follow`")
    sys.exit(_follow(cluster, follow=True))


def _follow(cluster, follow: bool) -> int:
    """Print the run's output (until it ends, with ``follow``); the script's exit status."""
    import time

    offset = 0
    try:
        while True:
            status = cluster.run_status()
            chunk = cluster.run_log(offset)
            offset = chunk["offset"]
            click.echo(chunk["text"], nl=False)
            if status["state"] == "done" and not chunk["text"]:
                to_stderr(f"{cluster.cluster_id}: {status['why']}")
                return int(status["returncode"] or 0)
            if not follow and not chunk["text"]:
                return 0
            time.sleep(0.5 if chunk["text"] else 1)
    except KeyboardInterrupt:
        to_stderr(f"detached; {cluster.cluster_id} goes on at {cluster.site.name}")
        return 130
    except Exception as err:
        click.secho(f"error: {err}", fg="red", err=True)
        return 1
    finally:
        cluster.close()  # detaches: the run goes on


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

    with exit_on_error():
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

    with exit_on_error():
        removed = stop_cluster(cluster_id, site)
    click.echo(f"removed {removed} job(s) of {cluster_id}")


@clusters.command("attach")
@click.argument("cluster_id")
@click.option("--site", help="where it runs (default: look at every site)")
@click.option("--shutdown", is_flag=True, help="end the cluster instead of holding it open")
@click.option(
    "--wait/--no-wait",
    default=True,
    help="hold the tunnel (and so the dashboard) open until Ctrl-C (default), or detach at once",
)
def clusters_attach(cluster_id: str, site: str | None, shutdown: bool, wait: bool) -> None:
    """Attach to CLUSTER_ID (yours, made with shutdown_on_close=False): show it, keep its
    dashboard reachable here until Ctrl-C, then detach (it goes on at the site)."""
    import time

    from .cluster import RemoteHTCondorCluster

    with exit_on_error():
        cluster = RemoteHTCondorCluster.from_name(cluster_id, site=site, quiet=True)
    try:
        workers = cluster.scheduler_info.get("workers", {})
        click.echo(f"{cluster_id} at {cluster.site.name}, scheduler job {cluster.job_id}")
        click.echo(f"workers: {len(workers)}; dashboard: {cluster.dashboard_link}")
        if shutdown:
            cluster.shutdown()
            click.echo(f"shut {cluster_id} down")
            return
        if wait:
            to_stderr("attached; Ctrl-C detaches (the cluster goes on)")
            with contextlib.suppress(KeyboardInterrupt):
                while not cluster.lost:
                    time.sleep(1)
            if cluster.lost:
                click.secho(f"error: {cluster.lost}", fg="red", err=True)
                sys.exit(1)
    finally:
        cluster.close()


@clusters.command("logs")
@click.argument("cluster_id")
@click.option("--follow", "-f", is_flag=True, help="until the run ends; exit with its status")
def clusters_logs(cluster_id: str, follow: bool) -> None:
    """The output of the script `remote-jobqueue run` started in CLUSTER_ID (yours)."""
    from .cluster import RemoteHTCondorCluster

    with exit_on_error():
        cluster = RemoteHTCondorCluster.from_name(cluster_id, quiet=True)
    sys.exit(_follow(cluster, follow))


@clusters.command("fetch")
@click.argument("cluster_id")
@click.argument("path")
@click.option("--to", "dest", type=click.Path(file_okay=False), default=".", help="directory")
def clusters_fetch(cluster_id: str, path: str, dest: str) -> None:
    """Bring back PATH, a file the run's script wrote (relative to its directory)."""
    from pathlib import Path

    from .cluster import RemoteHTCondorCluster

    with exit_on_error():
        cluster = RemoteHTCondorCluster.from_name(cluster_id, quiet=True)
        try:
            data = cluster.run_file(path)
        finally:
            cluster.close()
        target = Path(dest) / Path(path).name
        target.write_bytes(data)
    click.echo(f"fetched {target} ({len(data)} bytes)")


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
