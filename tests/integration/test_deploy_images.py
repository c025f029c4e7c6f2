"""The product's images (``docker/gateway``, ``docker/hub``, ``docker/lab``), built and run here.

Specification (issue "Deploying at a facility"): the images build from the checkout with
podman, as a facility builds them with Docker. The gateway image, run as a container on the
facility's hub network in place of the facility's own gateway, takes a bundle's reverse
forwards from ``T2_A`` (behind its NAT) and alice's tunnel: her cluster computes through it.
The hub image runs JupyterHub with the configuration the Helm chart renders (its ConfigMap,
Secret, environment and arguments, as the kubelet would hand them over), behind the chart's
proxy run from the same image, and answers ``/hub/health``. The lab image holds the analysis
stack and the Dask panel. Nothing of the test is left: no container.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request
import uuid
from pathlib import Path

import dask.config
import pytest
import yaml
from dask.distributed import Client

from remote_jobqueue import RemoteHTCondorCluster
from remote_jobqueue.gateway.hostkeys import load_or_create_host_key, public_key_text
from remote_jobqueue.tokens import WLCG_ANY_AUDIENCE
from rjq_facility import gateway_service, images

from ..waiting import wait_until
from .helpers import podman

pytestmark = pytest.mark.timeout(1800)

LABEL = "org.remote-jobqueue.test=1"
CHART = Path(__file__).resolve().parents[2] / "helm" / "remote-jobqueue"


def logs(container: str) -> str:
    """A container's output, both streams (``podman logs`` keeps them apart)."""
    done = subprocess.run(["podman", "logs", container], capture_output=True, text=True)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    return images.ensure_images(("gateway", "hub", "lab"))


@pytest.fixture
def containers():
    """Names of the containers a test starts; all removed afterwards, whatever happened."""
    names: list[str] = []
    yield names
    if names:
        podman("rm", "--force", "--time", "2", "--ignore", *names, check=False)


def test_the_lab_image_holds_the_analysis_stack_the_dask_panel_and_the_site_picker(built):
    code = (
        "import remote_jobqueue, coffea, uproot, awkward, dask_labextension, ROOT, sys;"
        "print(sys.version_info[:2], ROOT.gROOT.GetVersion())"
    )
    out = podman("run", "--rm", "--network=none", built["lab"], "python", "-c", code, timeout=300)
    assert out.startswith("(3, 11)"), out
    extensions = podman("run", "--rm", "--network=none", built["lab"], "jupyter", "labextension",
                        "list", check=False)  # fmt: skip
    uid = podman("run", "--rm", "--network=none", built["lab"], "id", "-u").strip()
    assert uid == "1000"
    listed = extensions + podman(
        "run", "--rm", "--network=none", built["lab"], "sh", "-c",
        "jupyter labextension list 2>&1; jupyter server extension list 2>&1",
    )  # fmt: skip
    for extension in ("dask-labextension", "remote-jobqueue-lab", "remote_jobqueue.lab"):
        assert extension in listed, extension


def test_the_gateway_image_carries_a_sites_bundle_and_a_users_tunnel(
    built, facility, alice, containers, tmp_path
):
    keys = tmp_path / "keys"
    keys.mkdir()
    key = load_or_create_host_key(keys / "host-key")
    # As a Secret volume hands it over: readable by the gateway's own uid only.
    os.chown(keys / "host-key", 10001, 10001)
    name = f"rjq-test-gateway-{uuid.uuid4().hex[:6]}"
    address = f"{facility.subnet_prefix}.5"
    containers.append(name)
    podman(
        "run", "--detach", f"--name={name}", f"--label={LABEL}",
        f"--network={facility.hub_network}:ip={address}",
        f"--volume={keys}:/etc/remote-jobqueue/gateway:ro",
        built["gateway"],
        "--listen", "0.0.0.0:2222",
        "--issuer", facility.issuer_url,
        "--audience", gateway_service.GATEWAY_AUDIENCE,
        "--audience", WLCG_ANY_AUDIENCE,
    )  # fmt: skip
    assert podman("inspect", "--format", "{{.Config.User}}", name).strip() == "10001:10001"
    wait_until(lambda: "gateway listening on" in logs(name), 60, "the gateway listening")
    via_container = {
        "remote-jobqueue.sites.T2_A.gateway": f"{address}:2222",
        "remote-jobqueue.sites.T2_A.gateway-host-key": public_key_text(key),
    }
    with (
        dask.config.set(via_container),
        RemoteHTCondorCluster(site="T2_A", cores=1, memory="1 GiB", quiet=True) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(1)
        client.wait_for_workers(1, timeout=180)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        cluster_id = cluster.cluster_id
    seen = logs(name)
    assert f"cluster {cluster_id} port 8786 of alice registered from" in seen
    assert f"cluster {cluster_id} port 8786 of alice unregistered" in seen


def _render(values: dict | None = None) -> list[dict]:
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values or {}, name="rjq", namespace="default")
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _kubelet_args(
    deployment: dict, docs: list[dict], where: Path, hosts: dict[str, str]
) -> tuple[list[str], list[str]]:
    """What a kubelet would give the Deployment's first container, as ``podman run`` options
    (volumes, environment, host names of Services) and the container's arguments."""
    secrets = _by_kind(docs, "Secret")
    configmaps = _by_kind(docs, "ConfigMap")

    def secret_value(ref: dict) -> str:
        secret = secrets[ref["name"]]
        if ref["key"] in secret.get("stringData", {}):
            return secret["stringData"][ref["key"]]
        return base64.b64decode(secret["data"][ref["key"]]).decode()

    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    options = [f"--add-host={host}:{ip}" for host, ip in hosts.items()]
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        source = where / mount["name"]
        if "configMap" in volume or "secret" in volume:
            if not source.exists():
                source.mkdir(parents=True)
                if "configMap" in volume:
                    data = configmaps[volume["configMap"]["name"]].get("data", {})
                else:
                    secret = secrets[volume["secret"]["secretName"]]
                    data = dict(secret.get("stringData", {}))
                    data |= {
                        k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()
                    }
                for key, text in data.items():
                    (source / key).write_text(text)
                    (source / key).chmod(0o644)
            if "subPath" in mount:
                source = source / mount["subPath"]
        else:  # emptyDir, persistentVolumeClaim: a fresh directory
            source.mkdir(parents=True, exist_ok=True)
            source.chmod(0o777)
        options.append(f"--volume={source}:{mount['mountPath']}")
    environment: dict[str, str] = {}
    for env in container.get("env", []):
        if "value" in env:
            value = env["value"]
        elif "secretKeyRef" in env.get("valueFrom", {}):
            value = secret_value(env["valueFrom"]["secretKeyRef"])
        elif "fieldRef" in env.get("valueFrom", {}):
            value = "default"
        else:
            continue
        environment[env["name"]] = value
    # Secret values go through a private file, never the podman command line.
    env_file = where / "environment"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{key}={value}\n" for key, value in environment.items())
    options.append(f"--env-file={env_file}")
    context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    if "runAsUser" in context:
        group = context.get("runAsGroup", context.get("fsGroup", context["runAsUser"]))
        options.append(f"--user={context['runAsUser']}:{group}")
    argv = [*container.get("command", []), *container.get("args", [])]
    if container.get("command"):
        options.append("--entrypoint=" + json.dumps(container["command"][:1]))
        argv = argv[1:]
    return options, argv


def test_the_hub_image_runs_the_charts_jupyterhub_and_answers_health(
    built, facility, containers, tmp_path
):
    name, tag = built["hub"].rsplit(":", 1)
    # The chart's defaults, but the facility's issuer (the Hub reads its discovery at start).
    docs = _render(
        {"oidc": {"issuer": facility.issuer_url}, "hub": {"image": {"name": name, "tag": tag}}}
    )
    deployments = _by_kind(docs, "Deployment")
    services = _by_kind(docs, "Service")
    hub = next(d for n, d in deployments.items() if n.endswith("-hub"))
    proxy = next(d for n, d in deployments.items() if n.endswith("-proxy"))
    ips = {"hub": f"{facility.subnet_prefix}.6", "proxy": f"{facility.subnet_prefix}.7"}
    # The Services, as cluster DNS would resolve them: by their selectors' component.
    hosts = {
        name: ips[svc["spec"]["selector"]["app.kubernetes.io/component"]]
        for name, svc in services.items()
        if svc["spec"].get("selector", {}).get("app.kubernetes.io/component") in ips
    }
    for component, deployment in (("proxy", proxy), ("hub", hub)):
        options, argv = _kubelet_args(deployment, docs, tmp_path / component, hosts)
        name = f"rjq-test-{component}-{uuid.uuid4().hex[:6]}"
        containers.append(name)
        podman(
            "run", "--detach", f"--name={name}", f"--label={LABEL}",
            f"--network={facility.hub_network}:ip={ips[component]}",
            *options, built["hub"], *argv,
        )  # fmt: skip
    (chp,) = proxy["spec"]["template"]["spec"]["containers"]
    port = next(p["containerPort"] for p in chp["ports"] if p["name"] == "http")
    url = f"http://{ips['proxy']}:{port}/hub/health"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 120, f"{url} answers 200")
    except AssertionError:
        seen = "\n".join(logs(n)[-3000:] for n in containers)
        raise AssertionError(f"the Hub did not become healthy:\n{seen}") from None
