"""`KubeRemoteSpawner` with KubeSpawner's defaults: the pod it would create, built for real.

Specification (issue 11): with KubeSpawner's default ``cmd`` (None: the image's command) the
server starts, wrapped in the refresher; the token file is on a memory-backed volume that only
the notebook container mounts, in a pod that runs as the user; the settings are in the pod's
environment and no credential is, beyond the server's own Hub API token; and the pod is valid
for Kubernetes 1.30. Each test builds the manifest with KubeSpawner's own
``get_pod_manifest()`` (``_mock=True``, a kubeconfig that names a server nobody contacts).
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import kube_config

from remote_jobqueue.environ import HUB_TOKEN_VARIABLES, looks_secret
from remote_jobqueue.spawner import refresher
from remote_jobqueue.spawner.kube import KubeRemoteSpawner
from remote_jobqueue.tokens import write_token_file

SITES = {
    "T2_A": {
        "collector": "10.0.0.1:9618",
        "schedd": "hub@test",
        "gateway": "10.0.0.1:2222",
        "gateway-host-key": "ssh-ed25519 AAAAC3Nza key",
    }
}
REFRESHER = ["python3", "-m", "remote_jobqueue.spawner.refresher", "--"]
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: not-used}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: jhub}}]
current-context: none
"""


def jwt_token(sub: str = "alice") -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + 600, "jti": os.urandom(4).hex()}
    return jwt.encode(claims, "not-checked-here-" * 4, algorithm="HS256")


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KubeSpawner loads a client configuration when it is made; nothing is ever contacted."""
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    # Read from $KUBECONFIG when kubernetes_asyncio is imported, so set where it was kept.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def make_spawner(**config: Any) -> KubeRemoteSpawner:
    user = SimpleNamespace(name="alice", id=7, url="/user/alice/")
    hub = SimpleNamespace(
        public_host="hub.example.org",
        url="http://hub:8081/hub/",
        base_url="/hub/",
        api_url="http://hub:8081/hub/api",
    )
    spawner = KubeRemoteSpawner(_mock=True, user=user, hub=hub, sites=SITES, **config)
    spawner.api_token = "0123456789abcdef0123456789abcdef"  # as JupyterHub hands one out
    return spawner


async def manifest(spawner: KubeRemoteSpawner) -> dict[str, Any]:
    """The pod as the API server would receive it (camelCase, no None fields)."""
    pod = await spawner.get_pod_manifest()
    async with ApiClient() as client:
        return client.sanitize_for_serialization(pod)


def notebook(doc: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in doc["spec"]["containers"] if c["name"] == "notebook"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# The command --------------------------------------------------------------------------------


async def test_kubespawners_default_cmd_starts_the_refresher_around_the_images_command():
    spawner = make_spawner()
    assert spawner.cmd is None  # KubeSpawner's default, kept
    container = notebook(await manifest(spawner))
    assert container["args"] == [*REFRESHER, "jupyterhub-singleuser"]
    assert "command" not in container, "the image's ENTRYPOINT (tini, start.sh) stays"
    assert spawner.cmd is None, "cmd is restored once the manifest is built"


@pytest.mark.parametrize(
    "config, wrapped",
    [
        ({"args": ["--debug"]}, ["jupyterhub-singleuser", "--debug"]),
        ({"default_cmd": ["start-notebook.py"]}, ["start-notebook.py"]),
        ({"cmd": ["start-singleuser.py"], "args": ["--debug"]}, ["start-singleuser.py", "--debug"]),
    ],
    ids=["args-after-the-default", "the-images-command-named", "cmd-set"],
)
async def test_the_refresher_wraps_the_command_and_its_args(config, wrapped):
    container = notebook(await manifest(make_spawner(**config)))
    assert container["args"] == [*REFRESHER, *wrapped]


async def test_the_command_is_wrapped_once_even_inside_the_mixins_own_wrap():
    spawner = make_spawner()
    with spawner.refresher_wrapped_cmd():  # what the mixin's start() holds for other spawners
        args = notebook(await manifest(spawner))["args"]
    assert args.count("remote_jobqueue.spawner.refresher") == 1
    assert args == [*REFRESHER, "jupyterhub-singleuser"]


async def test_a_profiles_command_is_wrapped_too_when_start_builds_the_pod():
    # KubeSpawner's start loads the user's profile (kubespawner_override may set cmd) and only
    # then builds the pod: the refresher must wrap what the profile says, not what was before.
    spawner = make_spawner(
        profile_list=[
            {
                "display_name": "docker-stacks",
                "slug": "stacks",
                "kubespawner_override": {"cmd": ["start-notebook.py"]},
            }
        ]
    )
    spawner.user_options = {"profile": "stacks"}

    async def start_without_an_api_server() -> dict[str, Any]:
        await spawner.load_user_options()
        return await manifest(spawner)

    spawner._start = start_without_an_api_server  # what KubeSpawner.start runs
    doc = await spawner.start()
    assert notebook(doc)["args"] == [*REFRESHER, "start-notebook.py"]


async def test_without_the_refresher_the_image_keeps_its_command():
    assert "args" not in notebook(await manifest(make_spawner(refresher=False)))


def test_the_refresher_takes_the_pods_arguments(monkeypatch):
    launched: list[list[str]] = []
    monkeypatch.setattr(refresher, "launch", launched.append)
    monkeypatch.setenv("BEARER_TOKEN_FILE", "/run/remote-jobqueue/alice/bearer-token")
    args = [*REFRESHER, "jupyterhub-singleuser", "--debug"]
    refresher.main(args[3:])
    assert launched == [["jupyterhub-singleuser", "--debug"]]


# The token's volume -------------------------------------------------------------------------


async def test_the_token_file_is_on_a_memory_volume_only_the_notebook_container_mounts():
    spawner = make_spawner(
        extra_containers=[{"name": "sidecar", "image": "busybox"}],
        init_containers=[{"name": "init", "image": "busybox"}],
    )
    doc = await manifest(spawner)
    container = notebook(doc)
    (volume,) = [v for v in doc["spec"]["volumes"] if v["name"] == "rjq-runtime"]
    assert volume == {"name": "rjq-runtime", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "rjq-runtime"]
    token_file = env_of(container)["BEARER_TOKEN_FILE"]["value"]
    assert token_file == "/run/remote-jobqueue/alice/bearer-token"
    assert Path(token_file).parent.parent == Path(mount["mountPath"])
    assert not mount.get("readOnly")  # the refresher replaces the file
    others = [*doc["spec"]["initContainers"], *doc["spec"]["containers"]]
    assert [c["name"] for c in others if c.get("volumeMounts")] == ["notebook"]


async def test_the_pod_runs_as_the_user_who_owns_the_token():
    doc = await manifest(make_spawner())
    assert notebook(doc)["securityContext"] == {
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
    }
    assert doc["spec"]["securityContext"] == {"fsGroup": 100}
    assert doc["spec"]["automountServiceAccountToken"] is False


def test_the_refresher_makes_the_users_directory_private_in_the_volume(tmp_path):
    # The kubelet makes an emptyDir 0777, setgid to fsGroup: the refresher makes runtime_dir in
    # it, ours and closed to the group and others (setgid is inherited, and harmless), and the
    # token file 0600.
    volume = tmp_path / "rjq-runtime"
    volume.mkdir()
    volume.chmod(0o2777)
    token_file = volume / "alice" / "bearer-token"
    refresher.check_private_dir(token_file.parent)
    write_token_file(token_file, jwt_token())
    st = token_file.parent.lstat()
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o777 == 0o700
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "config",
    [
        {"volume_mounts": [{"name": "home", "mountPath": "/run/remote-jobqueue"}]},
        {"runtime_dir": "/alice"},
    ],
    ids=["mount-point-taken", "below-the-root"],
)
async def test_a_runtime_dir_the_volume_cannot_hold_is_refused(config):
    if "volume_mounts" in config:
        config["volumes"] = [{"name": "home", "emptyDir": {}}]
    with pytest.raises(ValueError, match="runtime_dir"):
        await make_spawner(**config).get_pod_manifest()


# The environment ----------------------------------------------------------------------------


async def test_the_pod_has_the_settings_in_its_environment():
    env = env_of(notebook(await manifest(make_spawner(xrootd_cache="root://10.0.0.1:11095"))))
    values = {name: e.get("value") for name, e in env.items()}
    assert values["CONDOR_CONFIG"] == "ONLY_ENV"
    assert values["_CONDOR_COLLECTOR_HOST"] == "10.0.0.1:9618"
    assert values["_CONDOR_SCITOKENS_FILE"] == values["BEARER_TOKEN_FILE"]
    assert json.loads(values["DASK_REMOTE_JOBQUEUE__SITES"].replace("'", '"')) == SITES
    assert values["XRD_PLUGINCONFDIR"] == "/run/remote-jobqueue/alice/xrootd-plugins"


async def test_no_credential_reaches_the_pods_environment():
    access, refresh = jwt_token(), "refresh-" + os.urandom(8).hex()
    spawner = make_spawner(
        environment={
            "OAUTH_CLIENT_SECRET": "client-s3cret",
            "JUPYTERHUB_CRYPT_KEY": "crypt-key-value",
            "INNOCENT_NAME": jwt_token("bob"),
            "FROM_A_SECRET": {"valueFrom": {"secretKeyRef": {"name": "hub", "key": "k"}}},
            "PLAIN": "kept",
        }
    )
    await spawner.run_auth_state_hook({"access_token": access, "refresh_token": refresh})
    doc = await manifest(spawner)
    text = json.dumps(doc)
    for secret in (access, refresh, "client-s3cret", "crypt-key-value", "secretKeyRef"):
        assert secret not in text
    env = env_of(notebook(doc))
    assert env["PLAIN"]["value"] == "kept"
    assert not [name for name, e in env.items() if looks_secret(name, e)]
    # The server's own Hub token (JupyterHub needs it there), under JupyterHub's names only.
    assert {n for n, e in env.items() if e.get("value") == spawner.api_token} <= set(
        HUB_TOKEN_VARIABLES
    )
    assert env["JUPYTERHUB_API_TOKEN"]["value"] == spawner.api_token


# Kubernetes' own schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {},
        {
            "cmd": ["start-singleuser.py"],
            "args": ["--debug"],
            "uid": 1001,
            "fs_gid": 1001,
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "home-alice"}}],
            "volume_mounts": [{"name": "home", "mountPath": "/home/jovyan"}],
            "extra_containers": [{"name": "sidecar", "image": "busybox"}],
        },
    ],
    ids=["defaults", "configured"],
)
async def test_the_pod_is_valid_for_kubernetes_1_30(config):
    doc = await manifest(make_spawner(**config))
    kubernetes_validate.validate(doc, "1.30.0", strict=True)
    broken = json.loads(json.dumps(doc))
    notebook(broken)["volumeMounts"][-1]["mode"] = 0o600  # no such field: strict refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


# The lab image --------------------------------------------------------------------------------


async def test_the_lab_image_is_what_the_spawners_defaults_expect():
    from .test_docker_files import ROOT, final_stage

    steps = final_stage(ROOT / "docker" / "lab" / "Dockerfile")
    spawner = make_spawner()
    assert ("CMD", json.dumps(spawner.default_cmd)) in steps
    assert ("USER", f"{spawner.uid}:{spawner.fs_gid}") in steps
    assert ("ENV", "PATH=/opt/rjq/bin:$PATH") in steps  # where refresher_python is found
    assert spawner.refresher_python == "python3"
    assert any(w == "RUN" and "-m venv /opt/rjq" in a for w, a in steps)
