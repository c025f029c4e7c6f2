"""`python -m remote_jobqueue.bundle bundle.json`: the scheduler job at the site.

Input files arrive in the job's scratch directory: ``bundle.json`` (no secrets), the user's
bearer token (to dial the gateway and, as a SciToken, to submit worker jobs), the cluster's
secret (its claim at the gateway) and TLS key, and a detached run's refresh token, all 0600.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from ..data import JOB_PLUGIN_DIR, use_nearest_cache
from ..spec import (
    BEARER_TOKEN,
    CLUSTER_SECRET,
    CONDOR_CA,
    CREDENTIALS_PORT,
    DASHBOARD_PORT,
    RUN_REFRESH_TOKEN,
    SCHEDULER_PORT,
    SECRET_INPUTS,
    TLS_CERT,
    TLS_KEY,
    BundleSpec,
)
from ..storage_auth import CA_VARIABLE

logger = logging.getLogger("remote_jobqueue.bundle")


def site_address(collector: str | None) -> str:
    """Our address on the site network: the one that routes towards the collector."""
    target = (collector or "10.255.255.255:9").rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((target, 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def setup_condor_client(spec: BundleSpec, scratch: Path) -> None:
    """Client settings for submitting worker jobs as the user: the bearer token, as a SciToken
    (over SSL, trusting the CA the client trusts). It is short-lived and renewed through the
    client's heartbeat, so the bundle holds no credential that outlives the cluster."""
    lines = [
        f"COLLECTOR_HOST = {spec.collector}",
        "SEC_CLIENT_AUTHENTICATION_METHODS = SCITOKENS",
        f"SCITOKENS_FILE = {scratch / BEARER_TOKEN}",
    ]
    ca = scratch / CONDOR_CA
    if ca.exists() and ca.stat().st_size > 0:
        lines.append(f"AUTH_SSL_CLIENT_CAFILE = {ca}")
    config = scratch / ".condor_config"
    config.write_text("\n".join(lines) + "\n")
    os.environ["CONDOR_CONFIG"] = str(config)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _workers_need_token(spec: BundleSpec, scratch: Path) -> bool:
    """Worker jobs get a copy of our bearer token only where the site's storage takes tokens
    (the catalogue names its CA): elsewhere they need no credential, and get none."""
    return (scratch / BEARER_TOKEN).is_file() and CA_VARIABLE in spec.worker.environment


async def run(spec: BundleSpec, scratch: Path, local: bool, address_file: Path | None) -> int:
    from .worker_jobs import WorkerProcess

    host = "127.0.0.1" if local else site_address(spec.collector)
    protocol = "tls" if spec.worker.tls else "tcp"
    port = 0
    resident = None
    if spec.resident_worker and spec.n_workers and not local:
        # Start the resident worker first, at the port the scheduler is about to take: its
        # start-up (imports) overlaps ours, and it connects as soon as the scheduler listens.
        port = free_port(host)
        resident = WorkerProcess(
            f"{protocol}://{host}:{port}",
            name=f"{spec.cluster_id}-0",
            worker=spec.worker,
            log_dir=scratch,
            label="resident",
        )
        await resident

    from .agent import SiteAgent
    from .dashboard import dashboard_socket_path, scheduler_class
    from .site_cluster import SiteCluster
    from .tracker import JobTracker

    security = scheduler_security(spec, scratch)
    Scheduler = scheduler_class(dashboard_socket_path(scratch))
    # The dashboard is plain HTTP: it moves to a UNIX socket only we can open (see dashboard.py).
    options = {"dashboard_address": "127.0.0.1:0", **spec.scheduler_options}
    if spec.worker.tls:
        options.update(security=security, protocol="tls")
    try:
        scheduler = await Scheduler(host=host, port=port, **options)
    except OSError:
        if not port:
            raise
        logger.warning("port %d was taken meanwhile; the scheduler takes another", port)
        if resident is not None:
            await resident.close()
            resident = None
        scheduler = await Scheduler(host=host, port=0, **options)
    dashboard = scheduler.dashboard_socket
    logger.info("scheduler at %s, dashboard on %s", scheduler.address, dashboard)

    tracker = None
    if not local:
        tracker = JobTracker(
            spec.collector,
            spec.schedd,
            spec.worker.submit_description(
                scheduler.address, spec.cluster_id, token=_workers_need_token(spec, scratch)
            ),
            scratch,
            interval=spec.poll_interval,
        )
        tracker.start()
    site = SiteCluster(
        scheduler,
        spec.cluster_id,
        spec.worker,
        tracker=tracker,
        scratch=scratch,
        security=security,
        resident_worker=spec.resident_worker,
        failure_limit=spec.worker_failure_limit,
    )
    if resident is not None:
        site.adopt_resident(resident)
    await site
    agent = SiteAgent(
        scheduler,
        site,
        spec,
        token_file=scratch / BEARER_TOKEN if spec.gateway else None,
    )

    forwarder = credentials = None
    if spec.gateway:
        from ..gateway.forwarder import ReverseForwarder

        token_file = scratch / BEARER_TOKEN
        services: dict[int, tuple[str, int] | str] = {SCHEDULER_PORT: (host, scheduler.port)}
        if dashboard:
            services[DASHBOARD_PORT] = str(dashboard)
        if spec.idle_timeout is not None and spec.worker.tls:
            credentials = credentials_server(spec, scratch)
            if credentials is not None:
                services[CREDENTIALS_PORT] = await credentials.start()
        forwarder = ReverseForwarder(
            gateway=spec.gateway,
            known_host_key=spec.gateway_host_key,
            token_source=lambda: token_file.read_text().strip(),
            cluster_id=spec.cluster_id,
            services=services,
            claim_secret=(scratch / CLUSTER_SECRET).read_text().strip(),
        )
        # A renewed token from the client is kept only once the gateway has taken it.
        agent.verify_token = forwarder.renew
    agent.install()
    if spec.n_workers:
        # Before dialling the gateway: workers start while the tunnel comes up.
        site.scale(spec.n_workers)
    if forwarder is not None:
        await forwarder.start()
    if spec.driver:
        from .driver import Driver

        agent.driver = Driver(scratch, spec.worker.python, spec.driver)
        await agent.driver.start(scheduler.address)
        agent.driver_task = asyncio.ensure_future(agent.follow_driver())
    renewer = run_token_renewer(spec, scratch, agent)
    if renewer is not None:
        renewer.start()
    if address_file is not None:
        tmp = address_file.with_suffix(".tmp")
        info = {"scheduler": scheduler.address, "dashboard_socket": str(dashboard or "")}
        tmp.write_text(json.dumps(info))
        tmp.replace(address_file)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # HTCondor sends SIGTERM when the job is removed: take the workers with us.
        loop.add_signal_handler(
            sig, lambda s=sig: asyncio.ensure_future(agent.shutdown(f"received {s.name}"))
        )
    try:
        await scheduler.finished()
    finally:
        # First, and whatever happens: the run's refresh token must not outlive it (the access
        # token it last got still removes the worker jobs below).
        if renewer is not None:
            await renewer.close()
    if tracker is not None:
        await tracker.close()
        await tracker.remove_all("cluster closed by remote-jobqueue")
    if forwarder is not None:
        await forwarder.close()
    if credentials is not None:
        await credentials.close()
    logger.info("bundle done: %s", agent.close_reason or "scheduler closed")
    return 0


def run_token_renewer(spec: BundleSpec, scratch: Path, agent):
    """A detached run's token renewer, if the client gave it a refresh token (`run_token.py`)."""
    refresh = scratch / RUN_REFRESH_TOKEN
    if not (spec.gateway and spec.renewal and refresh.exists()):
        return None
    from .token_renewer import TokenRenewer

    return TokenRenewer(spec.renewal, refresh, scratch / BEARER_TOKEN, agent.renew_token)


def credentials_server(spec: BundleSpec, scratch: Path):
    """A detachable cluster's TLS pair, for a caller who proves at the schedd that it owns
    our job (see `credentials.py`); None if we cannot tell which job we are."""
    from .. import schedd as sched
    from .credentials import CHALLENGE_ATTRIBUTE, CredentialsServer, own_job_id

    job_id = own_job_id(Path(os.environ.get("_CONDOR_JOB_AD", scratch / ".job.ad")))
    if job_id is None:
        logger.warning("no job ad: this cluster cannot be attached to from another process")
        return None
    cluster, proc = job_id.split(".")

    def query() -> str | None:
        schedd = sched.locate(spec.collector, spec.schedd)
        constraint = f"ClusterId == {cluster} && ProcId == {proc}"
        ads = schedd.query(constraint, projection=[CHALLENGE_ATTRIBUTE])
        value = ads[0].get(CHALLENGE_ATTRIBUTE) if ads else None
        return None if value is None else str(value)

    async def read_challenge() -> str | None:
        return await asyncio.to_thread(query)

    return CredentialsServer(scratch, scratch / TLS_CERT, scratch / TLS_KEY, read_challenge)


def scheduler_security(spec: BundleSpec, scratch: Path):
    """With TLS, only holders of the cluster's certificate talk to the scheduler (its port is
    open to everyone at the site); the site cluster's own connection uses the same pair."""
    from distributed import Security

    if not spec.worker.tls:
        return Security()
    # One pair for every role (as `Security.temporary` made it), and it is its own CA.
    files = {"cert": str(scratch / TLS_CERT), "key": str(scratch / TLS_KEY)}
    roles = {
        f"tls_{role}_{kind}": path
        for role in ("scheduler", "client")
        for kind, path in files.items()
    }
    return Security(require_encryption=True, tls_ca_file=files["cert"], **roles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote_jobqueue.bundle")
    parser.add_argument("spec", type=Path, help="bundle.json")
    parser.add_argument("--local", action="store_true", help="workers as local processes")
    parser.add_argument("--address-file", type=Path, help="write the scheduler address here")
    args = parser.parse_args(argv)
    # `kill -USR1` shows where a stuck bundle is, in the job's stderr.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    spec = BundleSpec.from_json(args.spec.read_text())
    if spec.candidates:  # site="random": pinned to wherever HTCondor ran us
        from .placement import machine_site_name, pin_to_landed_site

        spec = pin_to_landed_site(spec, machine_site_name())
        logger.info("the scheduler job landed at %s; its workers go there too", spec.site)
        # The scheduler's own reads go through the landed site's cache too.
        os.environ.update(spec.worker.environment)
    if not spec.worker.tls:  # the client refuses tls=False too; a spec made by hand may not
        parser.error(
            "refusing to run a scheduler without TLS: anyone who reaches its port "
            "could run code as you"
        )
    scratch = args.spec.resolve().parent
    # Reads by the scheduler (and the resident worker, its child) go through the site's cache.
    use_nearest_cache(scratch / JOB_PLUGIN_DIR)
    secrets = [scratch / name for name in SECRET_INPUTS]
    for secret in secrets:
        if secret.exists():
            secret.chmod(0o600)
    if not args.local:
        setup_condor_client(spec, scratch)
        # Load the bindings now, not inside the event loop: their start-up blocks the process.
        import htcondor2  # noqa: F401
    try:
        return asyncio.run(run(spec, scratch, args.local, args.address_file))
    finally:
        if args.local:  # the scratch directory is the client's: leave no secret in it
            for secret in secrets:
                secret.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
