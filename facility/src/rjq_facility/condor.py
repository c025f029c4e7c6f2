"""The HTCondor pool: configuration, containers, and the users' IDTOKENS.

Every node is a container of ``docker/condor``: the pool's container on the hub side (collector,
negotiator, schedd and the T2_LOCAL slots) and one execute node per remote site, on the site's
network behind its NAT router, reached through CCB. Each role gets its own top-level
configuration and local directory under the facility's state directory, which every container
mounts at the same path, so the image is never written to and its configuration stays one.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from . import containers, network, scitokens
from .config import FacilityConfig, Site
from .containers import slug
from .images import user_in
from .network import LABEL

CONDOR_DIRS = ("log", "lock", "spool", "execute", "run", "cred_dir")


class PoolError(RuntimeError):
    pass


def condor_dir(cfg: FacilityConfig) -> Path:
    return cfg.state_dir / "condor"


def role_name(site: Site) -> str:
    return "hub" if not site.private else site.name


def role_config_path(cfg: FacilityConfig, site: Site) -> Path:
    return condor_dir(cfg) / f"{role_name(site)}.conf"


def common_config(cfg: FacilityConfig) -> str:
    d = condor_dir(cfg)
    return f"""\
# Written by remote-jobqueue: what every daemon of the development pool shares.
RELEASE_DIR = /usr
ETC = /etc/condor
BIN = $(RELEASE_DIR)/bin
LIB = $(RELEASE_DIR)/lib/condor
SBIN = $(RELEASE_DIR)/sbin
LIBEXEC = $(RELEASE_DIR)/libexec/condor
SHARE = $(RELEASE_DIR)/share/condor
INCLUDE = $(RELEASE_DIR)/include/condor
RUN = $(LOCAL_DIR)/run
LOG = $(LOCAL_DIR)/log
LOCK = $(LOCAL_DIR)/lock
SPOOL = $(LOCAL_DIR)/spool
EXECUTE = $(LOCAL_DIR)/execute
CRED_STORE_DIR = $(LOCAL_DIR)/cred_dir
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR =
REQUIRE_LOCAL_CONFIG_FILE = false

use security:recommended_v9_0
SEC_PASSWORD_DIRECTORY = {d}/passwords.d
SEC_TOKEN_SYSTEM_DIRECTORY = {d}/tokens.d
SEC_TOKEN_DIRECTORY = {d}/tokens.d
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS
SEC_CLIENT_AUTHENTICATION_METHODS = FS, IDTOKENS

CONDOR_HOST = {cfg.pool_address}
COLLECTOR_HOST = {cfg.collector}
UID_DOMAIN = {cfg.uid_domain}
FILESYSTEM_DOMAIN = {cfg.uid_domain}
TRUST_DOMAIN = {cfg.uid_domain}
TRUST_UID_DOMAIN = true
SOFT_UID_DOMAIN = true

ALLOW_READ = *
ALLOW_WRITE = *@{cfg.uid_domain}, condor_pool@*, condor@*
ALLOW_DAEMON = condor@{cfg.uid_domain}, condor_pool@*, condor@*
ALLOW_NEGOTIATOR = condor@{cfg.uid_domain}, condor_pool@*, condor@*
ALLOW_ADMINISTRATOR = condor@{cfg.uid_domain}, root@{cfg.uid_domain}, condor_pool@*
QUEUE_SUPER_USERS = root, condor

# Matchmaking fast enough that an idle pool runs a job within about two seconds.
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_CYCLE_DELAY = 1
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_UPDATE_AFTER_CYCLE = true
SCHEDD_INTERVAL = 2
SCHEDD_MIN_INTERVAL = 0
UPDATE_INTERVAL = 2
STARTER_UPDATE_INTERVAL = 2
SHADOW_QUEUE_UPDATE_INTERVAL = 2
JOB_START_DELAY = 0
JOB_START_COUNT = 50
STARTD_UPDATE_INTERVAL = 2
MASTER_UPDATE_INTERVAL = 10
SCHEDD_UPDATE_INTERVAL = 2
PERIODIC_EXPR_INTERVAL = 2
CLAIM_WORKLIFE = 0
RUNBENCHMARKS = false
STARTD_CRON_JOBLIST =
NO_DNS = true
DEFAULT_DOMAIN_NAME = {cfg.uid_domain}

# Inside a container: no mount or pid namespaces for jobs; cgroups are not writable.
MOUNT_UNDER_SCRATCH =
USE_PID_NAMESPACES = false
BASE_CGROUP =
STARTER_ALLOW_RUNAS_OWNER = true
"""


def role_config(cfg: FacilityConfig, site: Site) -> str:
    local_dir = condor_dir(cfg) / role_name(site)
    lines = [
        f"# Written by remote-jobqueue: role {role_name(site)} of the development pool.",
        f"include : {condor_dir(cfg) / 'common.conf'}",
        f"LOCAL_DIR = {local_dir}",
        f"NETWORK_INTERFACE = {site.address}",
        "use ROLE: Execute",
    ]
    if not site.private:
        lines[4:4] = ["use ROLE: CentralManager", "use ROLE: Submit"]
    else:
        # Behind NAT: every inbound connection comes back through the collector's CCB.
        lines += ["CCB_ADDRESS = $(COLLECTOR_HOST)", f"PRIVATE_NETWORK_NAME = {site.name}"]
    lines += [
        f'SiteName = "{site.name}"',
        "STARTD_ATTRS = $(STARTD_ATTRS) SiteName",
        "MASTER_ATTRS = $(MASTER_ATTRS) SiteName",
        f"NUM_CPUS = {site.cpus}",
        f"MEMORY = {site.memory_mb}",
        "SLOT_TYPE_1 = 100%",
        "SLOT_TYPE_1_PARTITIONABLE = true",
        "NUM_SLOTS_TYPE_1 = 1",
        f"STARTD_NAME = {site.name.lower()}",
        f"MASTER_NAME = {site.name.lower()}",
    ]
    if not site.private:
        lines += [f"SCHEDD_NAME = {cfg.schedd_name}"]
        return "\n".join(lines) + "\n" + scitokens.schedd_config(cfg)
    return "\n".join(lines) + "\n"


def client_config(cfg: FacilityConfig, user: str) -> str:
    token_dir = cfg.user_dir(user) / "tokens.d"
    return f"""\
# HTCondor client settings for {user} (remote-jobqueue development facility).
COLLECTOR_HOST = {cfg.collector}
SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS
SEC_TOKEN_DIRECTORY = {token_dir}
AUTH_SSL_CLIENT_CAFILE = {scitokens.ca_file(cfg)}
UID_DOMAIN = {cfg.uid_domain}
FILESYSTEM_DOMAIN = {cfg.uid_domain}
"""


def container_name(site: Site) -> str:
    return f"rjq-pool-{slug(role_name(site))}"


def write_configs(cfg: FacilityConfig, condor_user: tuple[int, int]) -> None:
    d = condor_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    (d / "common.conf").write_text(common_config(cfg))
    condor_uid, condor_gid = condor_user
    for sub in ("passwords.d", "tokens.d"):
        (d / sub).mkdir(exist_ok=True)
        (d / sub).chmod(0o700)
    for site in cfg.sites:
        role_config_path(cfg, site).write_text(role_config(cfg, site))
        local = d / role_name(site)
        for sub in CONDOR_DIRS:
            path = local / sub
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, condor_uid, condor_gid)
            path.chmod(0o755)
        os.chown(local, condor_uid, condor_gid)
        local.chmod(0o755)


def run_argv(cfg: FacilityConfig, image: str, site: Site, software: list[Path]) -> list[str]:
    """``podman run`` of one node: the hub's pool container or a site's execute node.

    The node sees the facility's state directory (configurations, local directories) at the
    same path, and the software area read-only at the host's paths, as CVMFS is mounted at
    every node of a real facility. ``/root`` is opened for traversal inside the container only:
    the host's Python may live below it (pyenv).
    """
    if site.private:
        where = [
            f"--network={site.network}:ip={site.address}",
            "--cap-add=NET_ADMIN",  # the entrypoint points the default route at the router
            f"--dns={network.NO_DNS}",  # see network.NO_DNS: no 10 s lookups in jobs
            f"--env=RJQ_ROUTER={site.router}",
        ]
    else:
        where = [f"--network={cfg.hub_network}:ip={cfg.pool_address}"]
    mounts = [f"--volume={cfg.state_dir}:{cfg.state_dir}"]
    mounts += [f"--volume={path}:{path}:ro" for path in software]
    return [
        "podman",
        "run",
        "--detach",
        f"--name={container_name(site)}",
        f"--label={LABEL}",
        f"--hostname={slug(role_name(site))}.{cfg.uid_domain}",
        *where,
        *mounts,
        f"--env=CONDOR_CONFIG={role_config_path(cfg, site)}",
        image,
        "sh",
        "-c",
        "chmod 0755 /root && exec condor_master -f",
    ]


def start_role(cfg: FacilityConfig, image: str, site: Site, software: list[Path]) -> None:
    name = container_name(site)
    if not containers.running(name):
        containers.remove(name)
        argv = run_argv(cfg, image, site, software)
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PoolError(f"starting {name} failed: {proc.stderr.strip()}")
    if site.private:
        # Every time, not only at a fresh start: a name lost since is given back.
        network.attach_netns(site, name)


def exec_argv(cfg: FacilityConfig, *argv: str) -> list[str]:
    """Run an HTCondor command in the pool's container, as its own configuration sees it."""
    hub = next(s for s in cfg.sites if not s.private)
    return [
        "podman",
        "exec",
        f"--env=CONDOR_CONFIG={role_config_path(cfg, hub)}",
        container_name(hub),
        *argv,
    ]


def wait_for_pool_key(cfg: FacilityConfig, timeout: float = 30) -> None:
    key = condor_dir(cfg) / "passwords.d" / "POOL"
    deadline = time.monotonic() + timeout
    while not key.exists():
        if time.monotonic() > deadline:
            raise PoolError(
                f"the pool signing key {key} did not appear; see {condor_dir(cfg)}/hub/log "
                f"and `podman logs {container_name(next(s for s in cfg.sites if not s.private))}`"
            )
        time.sleep(0.2)


def create_token(cfg: FacilityConfig, identity: str, lifetime: int | None = None) -> str:
    argv = ["condor_token_create", "-identity", identity]
    if lifetime:
        argv += ["-lifetime", str(lifetime)]
    proc = subprocess.run(exec_argv(cfg, *argv), capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise PoolError(f"condor_token_create for {identity} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def write_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)


def setup_identities(cfg: FacilityConfig) -> None:
    """Daemon token for remote sites, and each user's token and client configuration."""
    # Always minted anew: a token signed by the key of an earlier `up` would be refused.
    daemon_token = condor_dir(cfg) / "tokens.d" / "condor"
    write_token(daemon_token, create_token(cfg, f"condor@{cfg.uid_domain}"))
    for user in cfg.users:
        udir = cfg.user_dir(user)
        udir.mkdir(parents=True, exist_ok=True)
        udir.chmod(0o700)
        token_file = udir / "tokens.d" / "token"
        write_token(token_file, create_token(cfg, f"{user}@{cfg.uid_domain}"))
        (udir / "condor_config").write_text(client_config(cfg, user))


def up(cfg: FacilityConfig, images: dict[str, str], software: list[Path]) -> None:
    """Start the pool's container on the hub side, then each site's execute node.

    ``images`` maps image names (a site's ``image``) to built tags; the ``worker`` image is
    built on ``condor``, so the condor user is the same in both."""
    condor_user = user_in(images["condor"], "condor")
    write_configs(cfg, condor_user)
    scitokens.setup(cfg, *condor_user)
    hub = next(s for s in cfg.sites if not s.private)
    start_role(cfg, images[hub.image], hub, software)
    wait_for_pool_key(cfg)
    setup_identities(cfg)
    for site in cfg.sites:
        if site.private:
            start_role(cfg, images[site.image], site, software)


def down(cfg: FacilityConfig) -> None:
    """Remove every node's container (jobs, shadows and starters die with them)."""
    containers.remove(*(container_name(site) for site in cfg.sites))


def running(cfg: FacilityConfig) -> dict[str, bool]:
    return {site.name: containers.running(container_name(site)) for site in cfg.sites}


def wait_for_sites(cfg: FacilityConfig, timeout: float = 90) -> dict[str, int]:
    """Wait until every site's startd is in the collector; return CPUs per site."""
    import htcondor2

    with _client_env(cfg, cfg.users[0]):
        collector = htcondor2.Collector(cfg.collector)
        deadline = time.monotonic() + timeout
        while True:
            try:
                ads = collector.query(htcondor2.AdTypes.Startd, projection=["SiteName", "Cpus"])
            except Exception as err:
                ads, last = [], err
            else:
                last = None
            seen: dict[str, int] = {}
            for ad in ads:
                seen[ad.get("SiteName", "?")] = seen.get(ad.get("SiteName", "?"), 0) + int(
                    ad.get("Cpus", 0)
                )
            if all(s.name in seen for s in cfg.sites):
                return seen
            if time.monotonic() > deadline:
                missing = [s.name for s in cfg.sites if s.name not in seen]
                raise PoolError(
                    f"sites {missing} did not join the pool within {timeout:.0f} s "
                    f"(last error: {last}); see the logs in {cfg.logs} and {condor_dir(cfg)}/*/log"
                )
            time.sleep(0.5)


class _client_env:
    """Temporarily point the HTCondor bindings at a user's client configuration."""

    def __init__(self, cfg: FacilityConfig, user: str) -> None:
        self.path = str(cfg.user_dir(user) / "condor_config")

    def __enter__(self) -> None:
        import htcondor2

        self.saved = os.environ.get("CONDOR_CONFIG")
        os.environ["CONDOR_CONFIG"] = self.path
        htcondor2.reload_config()

    def __exit__(self, *exc: object) -> None:
        import htcondor2

        if self.saved is None:
            os.environ.pop("CONDOR_CONFIG", None)
        else:
            os.environ["CONDOR_CONFIG"] = self.saved
        htcondor2.reload_config()
