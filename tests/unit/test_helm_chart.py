"""The Helm chart of the hub side (``helm/remote-jobqueue``), up to the Kubernetes API server.

No API server can run on the project's machines, so this is everything before one:
helm-python-sdk (Helm v4 as a library) lints and renders the chart, for its default values and
for ``ci/three-sites-values.yaml``; every rendered manifest validates, strictly, against the
Kubernetes API schemas of 1.30 and of the newest version kubernetes-validate knows;
``values.schema.json`` refuses what it should, with Helm's own message; and what the manifests
say is checked: the site catalogue, secrets only in Secrets, references that resolve, the
gateway's command line as the gateway parses it, non-root containers. The rendered
``jupyterhub_config.py`` is loaded as the Hub would load it, and KubeSpawner builds the user's
pod from it, which validates too.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import asyncssh
import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from traitlets.config import PyFileConfigLoader

from remote_jobqueue import config as rjq_config
from remote_jobqueue.gateway.cli import _parser as gateway_parser

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "remote-jobqueue"
THREE_SITES = yaml.safe_load((CHART / "ci" / "three-sites-values.yaml").read_text())
RELEASE, NAMESPACE = "rjq", "physics"
FULLNAME = f"{RELEASE}-remote-jobqueue"
#: The oldest Kubernetes the chart is tested for, and the newest the validator knows.
K8S_VERSIONS = sorted({"1.30.0", latest_version()})
VALUES = {"default": {}, "three-sites": THREE_SITES}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


class Rendered:
    """One render of the chart: its templates' text and their manifests, by kind and name."""

    def __init__(self, values: dict[str, Any]) -> None:
        with helm_python.Chart.load(CHART) as chart:
            self.templates = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
        self.manifests = [
            doc
            for path, text in sorted(self.templates.items())
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    @property
    def notes(self) -> str:
        return next(text for path, text in self.templates.items() if path.endswith("NOTES.txt"))

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def get(self, kind: str, component: str) -> dict[str, Any]:
        name = f"{FULLNAME}-{component}"
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
        return found[0]

    def secret_data(self, component: str) -> dict[str, str]:
        data = self.get("Secret", component)["data"]
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def container(self, component: str, name: str | None = None) -> dict[str, Any]:
        pod = self.get("Deployment", component)["spec"]["template"]["spec"]
        return next(c for c in pod["containers"] if name in (None, c["name"]))


@pytest.fixture(scope="module")
def default() -> Rendered:
    return Rendered({})


@pytest.fixture(scope="module")
def three_sites() -> Rendered:
    return Rendered(THREE_SITES)


@pytest.fixture(scope="module", params=list(VALUES))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(VALUES[request.param])


# Lint and render ------------------------------------------------------------------------------


@pytest.mark.parametrize("values", list(VALUES))
def test_the_chart_lints_with_no_error_or_warning(values: str) -> None:
    report = helm_python.lint(CHART, VALUES[values], strict=True, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_values_the_schema_refuses() -> None:
    report = helm_python.lint(CHART, {"gateway": {"service": {"port": "22"}}})
    assert any(
        "at '/gateway/service/port': got string, want integer" in e for e in report["errors"]
    )


def test_the_chart_is_the_hub_side_of_a_facility(rendered: Rendered) -> None:
    kinds = {
        (m["kind"], m["metadata"]["name"].removeprefix(f"{FULLNAME}-")) for m in rendered.manifests
    }
    assert {
        ("Deployment", "hub"),
        ("Deployment", "proxy"),
        ("Deployment", "gateway"),
        ("Service", "hub"),
        ("Service", "proxy-api"),
        ("Service", "proxy-public"),
        ("Service", "gateway"),
        ("ConfigMap", "hub"),
        ("ConfigMap", "dask-config"),
        ("Secret", "hub"),
        ("Secret", "gateway"),
        ("Secret", "gateway-host-key"),
        ("ServiceAccount", "hub"),
        ("Role", "hub"),
        ("RoleBinding", "hub"),
        ("PersistentVolumeClaim", "hub"),
    } <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_strictly_against_kubernetes(
    rendered: Rendered, version: str
) -> None:
    assert len(rendered.manifests) >= 16
    for manifest in rendered.manifests:
        name = f"{manifest['kind']} {manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name} is no valid Kubernetes {version} object: {err}")


OWN_SECRETS = {
    "oidc": {"existingSecret": {"name": "iam-client", "key": "secret"}},
    "gateway": {
        "hostKey": {"existingSecret": "gateway-key"},
        "hubTokens": {"enabled": False},
        "service": {"type": "NodePort", "nodePort": 30022},
    },
    "hub": {"db": {"type": "sqlite-memory"}},
    "proxy": {"service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["192.0.2.0/24"]}},
    "singleuser": {"storage": {"type": "none"}},
}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_with_the_operators_own_secrets_the_chart_uses_them_and_makes_only_the_hubs(
    version: str,
) -> None:
    rendered = Rendered(OWN_SECRETS)
    for manifest in rendered.manifests:
        kubernetes_validate.validate(manifest, version, strict=True)
    assert [m["metadata"]["name"] for m in rendered.of_kind("Secret")] == [f"{FULLNAME}-hub"]
    assert rendered.of_kind("PersistentVolumeClaim") == []
    env = {e["name"]: e for e in rendered.container("hub")["env"]}
    assert (
        env["OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
        == OWN_SECRETS["oidc"]["existingSecret"]
    )
    pod = rendered.get("Deployment", "gateway")["spec"]["template"]["spec"]
    (key,) = [v for v in pod["volumes"] if "secret" in v]
    assert key["secret"]["secretName"] == "gateway-key"
    assert rendered.get("Service", "gateway")["spec"]["ports"][0]["nodePort"] == 30022


def test_strict_validation_refuses_a_misspelt_field(default: Rendered) -> None:
    deployment = copy.deepcopy(default.get("Deployment", "gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="securityContex"):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


def test_the_newest_kubernetes_is_newer_than_the_oldest_tested() -> None:
    assert len(K8S_VERSIONS) == 2
    major, minor = (int(n) for n in K8S_VERSIONS[-1].split(".")[:2])
    assert (major, minor) > (1, 30)


# values.schema.json ----------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def test_the_values_schema_is_draft_07_closed_at_the_top_and_takes_both_values_files() -> None:
    doc = schema()
    assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(doc)
    assert doc["additionalProperties"] is False
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(doc["properties"])
    validator = jsonschema.Draft7Validator(doc)
    assert list(validator.iter_errors(defaults)) == []
    assert list(validator.iter_errors(merged(defaults, THREE_SITES))) == []


def test_the_schema_refuses_a_string_for_the_gateway_port() -> None:
    values = {"gateway": {"service": {"port": "22"}}}
    with helm_python.Chart.load(CHART) as chart:
        with pytest.raises(helm_python.HelmValuesError) as err:
            chart.validate_schema(values)
        assert "at '/gateway/service/port': got string, want integer" in str(err.value)
        with pytest.raises(helm_python.HelmValuesError, match="got string, want integer"):
            chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_the_schema_refuses_an_unknown_top_level_key() -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.validate_schema({"site": {"T2_A": {}}})
    assert "at '': additional properties 'site' not allowed" in str(err.value)


def test_the_schema_refuses_an_unknown_key_of_a_site() -> None:
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.validate_schema({"sites": {"T2_A": {"colector": "cm.example.org:9618"}}})
    assert "at '/sites/T2_A': additional properties 'colector' not allowed" in str(err.value)


def test_the_schema_refuses_a_crypt_key_jupyterhub_would_refuse() -> None:
    with (
        helm_python.Chart.load(CHART) as chart,
        pytest.raises(helm_python.HelmValuesError, match="/hub/cryptKey"),
    ):
        chart.validate_schema({"hub": {"cryptKey": "not-hex"}})


def test_sites_and_dask_settings_have_the_keys_of_the_projects_own_schema() -> None:
    dask = yaml.safe_load((ROOT / "src/remote_jobqueue/remote-jobqueue-schema.yaml").read_text())
    section = dask["properties"]["remote-jobqueue"]["properties"]
    site_keys = set(section["sites"]["additionalProperties"]["properties"])
    values = schema()["properties"]
    assert set(values["sites"]["additionalProperties"]["properties"]) == site_keys
    assert set(values["daskConfig"]["propertyNames"]["enum"]) == set(section) - {
        "sites",
        "token-file",
    }


# What the manifests say -----------------------------------------------------------------------


def site_catalogue(rendered: Rendered) -> dict[str, Any]:
    config_map = rendered.get("ConfigMap", "dask-config")
    return yaml.safe_load(config_map["data"]["remote-jobqueue.yaml"])


def test_the_site_catalogue_carries_the_three_sites_for_dask(three_sites: Rendered) -> None:
    catalogue = site_catalogue(three_sites)
    sites = catalogue["remote-jobqueue"]["sites"]
    assert set(sites) == {"T2_A", "T2_B", "T2_LOCAL"}
    for name, given in THREE_SITES["sites"].items():
        assert {k: sites[name][k] for k in given} == given
    # A site without a gateway of its own gets the chart's; every site pins its key.
    key = THREE_SITES["gateway"]["hostKey"]["publicKey"]
    assert sites["T2_A"]["gateway"] == sites["T2_B"]["gateway"] == "gateway.example.org:22"
    assert sites["T2_LOCAL"]["gateway"] == "gateway.internal.example.org:2222"
    assert {site["gateway-host-key"] for site in sites.values()} == {key}
    assert catalogue["remote-jobqueue"]["site"] == "random"
    # What remote_jobqueue itself accepts (it refuses unknown keys, naming them).
    assert rjq_config.check(catalogue["remote-jobqueue"])["sites"] == sites


def test_without_sites_the_catalogue_is_empty(default: Rendered) -> None:
    assert site_catalogue(default) == {"remote-jobqueue": {"sites": {}}}


def test_the_catalogue_is_mounted_where_dask_reads_it_in_the_hub(rendered: Rendered) -> None:
    pod = rendered.get("Deployment", "hub")["spec"]["template"]["spec"]
    dask_config = f"{FULLNAME}-dask-config"
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == dask_config)
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == "/etc/dask/remote-jobqueue.yaml"
    assert mount["subPath"] in rendered.get("ConfigMap", "dask-config")["data"]


SECRET_VALUES = {
    "proxy": {"secretToken": "proxy-token-0123456789abcdefghijklmnopqrstuvwxyz"},
    "hub": {"cookieSecret": "c0" * 32, "cryptKey": "ab" * 32},
    "oidc": {"clientSecret": "oidc-client-secret-0123456789abcdef"},
    "gateway": {"hubTokens": {"apiToken": "gateway-hub-token-0123456789abcdef"}},
}


def not_secrets(rendered: Rendered) -> str:
    return "\n".join(yaml.safe_dump(m) for m in rendered.manifests if m["kind"] != "Secret")


def test_given_secrets_are_in_secrets_and_nowhere_else() -> None:
    rendered = Rendered(merged(THREE_SITES, SECRET_VALUES))
    given = [
        SECRET_VALUES["proxy"]["secretToken"],
        SECRET_VALUES["hub"]["cookieSecret"],
        SECRET_VALUES["hub"]["cryptKey"],
        SECRET_VALUES["oidc"]["clientSecret"],
        SECRET_VALUES["gateway"]["hubTokens"]["apiToken"],
    ]
    in_secrets = {v for s in ("hub", "gateway") for v in rendered.secret_data(s).values()}
    elsewhere = not_secrets(rendered)
    for value in given:
        assert value in in_secrets
        assert value not in elsewhere


def test_generated_secrets_are_in_no_config_map_and_no_pod_spec(rendered: Rendered) -> None:
    secrets = {
        key: value
        for component in ("hub", "gateway", "gateway-host-key")
        for key, value in rendered.secret_data(component).items()
        if key != "passthrough.yaml"  # hub.config and hub.extraConfig, not generated
    }
    assert len(secrets) >= 5
    config_maps = "\n".join(yaml.safe_dump(m) for m in rendered.of_kind("ConfigMap"))
    elsewhere = not_secrets(rendered)
    for key, value in secrets.items():
        assert len(value) >= 16, key  # long enough not to turn up by chance
        assert value.strip() not in config_maps, f"{key} is in a ConfigMap"
        assert value.strip() not in elsewhere, f"{key} is outside a Secret"
    assert "PRIVATE KEY" not in elsewhere


def test_the_proxy_token_is_one_secret_shared_by_hub_and_proxy(rendered: Rendered) -> None:
    def token_ref(component: str) -> dict[str, str]:
        env = {e["name"]: e for e in rendered.container(component)["env"]}
        return env["CONFIGPROXY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]

    shared = {"name": f"{FULLNAME}-hub", "key": "proxy-auth-token"}
    assert token_ref("hub") == token_ref("proxy") == shared
    assert len(rendered.secret_data("hub")["proxy-auth-token"]) == 64


def test_the_crypt_key_and_cookie_secret_are_keys_jupyterhub_accepts(rendered: Rendered) -> None:
    data = rendered.secret_data("hub")
    for key in ("crypt-key", "cookie-secret"):
        assert len(binascii.a2b_hex(data[key])) == 32, key
    env = {e["name"]: e for e in rendered.container("hub")["env"]}
    ref = env["JUPYTERHUB_CRYPT_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{FULLNAME}-hub", "key": "crypt-key"}


def test_a_generated_host_key_is_an_ed25519_key_the_gateway_reads(default: Rendered) -> None:
    private = default.secret_data("gateway-host-key")["ssh_host_ed25519_key"]
    key = asyncssh.import_private_key(private)
    assert key.algorithm == b"ssh-ed25519"


def test_a_given_host_key_is_used_as_it_is() -> None:
    private = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode()
    rendered = Rendered({"gateway": {"hostKey": {"privateKey": private}}})
    assert rendered.secret_data("gateway-host-key")["ssh_host_ed25519_key"] == private


def test_every_reference_resolves_within_the_release(rendered: Rendered) -> None:
    secrets = {m["metadata"]["name"]: set(m["data"]) for m in rendered.of_kind("Secret")}
    config_maps = {m["metadata"]["name"]: set(m["data"]) for m in rendered.of_kind("ConfigMap")}
    claims = {m["metadata"]["name"] for m in rendered.of_kind("PersistentVolumeClaim")}
    accounts = {m["metadata"]["name"] for m in rendered.of_kind("ServiceAccount")}
    deployments = rendered.of_kind("Deployment")
    assert len(deployments) == 3
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        if "serviceAccountName" in pod:
            assert pod["serviceAccountName"] in accounts
        for volume in volumes.values():
            if "secret" in volume:
                keys = {item["key"] for item in volume["secret"]["items"]}
                assert keys <= secrets[volume["secret"]["secretName"]]
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in pod["containers"] + pod.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], env["name"]
    # Each Service selects one Deployment's pods, on a port its container names.
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in deployments}
    for service in rendered.of_kind("Service"):
        selector = service["spec"]["selector"]
        chosen = [t for t in pods.values() if selector.items() <= t["metadata"]["labels"].items()]
        assert len(chosen) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in chosen[0]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_the_hubs_role_lets_it_create_users_pods_and_claims(rendered: Rendered) -> None:
    rules = rendered.get("Role", "hub")["rules"]
    allowed = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    for resource in ("pods", "persistentvolumeclaims"):
        for verb in ("create", "delete", "get", "list", "watch"):
            assert (resource, verb) in allowed
    binding = rendered.get("RoleBinding", "hub")
    assert binding["roleRef"]["name"] == f"{FULLNAME}-hub"
    account = rendered.get("Deployment", "hub")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]


def test_images_default_to_the_projects_with_the_apps_version(rendered: Rendered) -> None:
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert rendered.container("hub")["image"] == f"remote-jobqueue/hub:{version}"
    assert rendered.container("proxy")["image"] == f"remote-jobqueue/hub:{version}"
    assert rendered.container("gateway")["image"] == f"remote-jobqueue/gateway:{version}"
    settings = yaml.safe_load(rendered.get("ConfigMap", "hub")["data"]["settings.yaml"])
    assert settings["singleuser"]["image"] == f"remote-jobqueue/lab:{version}"


def test_an_image_tag_can_be_pinned() -> None:
    rendered = Rendered({"gateway": {"image": {"name": "registry.example.org/gw", "tag": "abc"}}})
    assert rendered.container("gateway")["image"] == "registry.example.org/gw:abc"


@pytest.mark.parametrize("component", ["hub", "proxy", "gateway"])
def test_containers_run_as_non_root_on_a_read_only_root_without_capabilities(
    rendered: Rendered, component: str
) -> None:
    pod = rendered.get("Deployment", component)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context.get("runAsUser", pod["securityContext"].get("runAsUser")) not in (None, 0)
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]


def test_the_gateway_runs_as_non_root(rendered: Rendered) -> None:
    pod = rendered.get("Deployment", "gateway")["spec"]["template"]["spec"]
    context = rendered.container("gateway")["securityContext"]
    assert context["runAsNonRoot"] is True
    # Its image's user, and not the users' uid (1000) the lab's pods run as.
    assert context["runAsUser"] == pod["securityContext"]["runAsUser"] == 10001
    hub = rendered.container("hub")["securityContext"]
    assert hub["runAsUser"] == 10002
    assert pod["automountServiceAccountToken"] is False


def gateway_args(rendered: Rendered) -> Any:
    container = rendered.container("gateway")
    assert container["command"] == ["remote-jobqueue", "gateway"]
    return gateway_parser().parse_args(container["args"])


def test_the_gateway_command_line_is_one_the_gateway_accepts(three_sites: Rendered) -> None:
    args = gateway_args(three_sites)
    oidc = yaml.safe_load((CHART / "values.yaml").read_text())["oidc"]
    assert args.issuer == THREE_SITES["oidc"]["issuer"]
    assert args.audience == oidc["audiences"]
    assert args.identity_claim == "preferred_username"
    assert args.hub_api_url == f"http://{FULLNAME}-hub:8081/hub/api"
    assert 0 < args.hub_token_ttl <= args.hub_recheck
    assert (args.max_preauth_per_address, args.max_failed_logins) == (8, 5)
    # It listens on the port the Service sends SSH to.
    port = next(p for p in three_sites.container("gateway")["ports"] if p["name"] == "ssh")
    assert args.listen == f"0.0.0.0:{port['containerPort']}"
    service = three_sites.get("Service", "gateway")["spec"]
    assert service["ports"][0]["port"] == 22 and service["ports"][0]["targetPort"] == "ssh"
    # Clients' own addresses reach it (its per-address limits count them).
    assert service["externalTrafficPolicy"] == "Local"


def test_the_gateways_files_are_mounted_where_its_options_name_them(default: Rendered) -> None:
    args = gateway_args(default)
    pod = default.get("Deployment", "gateway")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    key_dir, key_file = args.host_key.rsplit("/", 1)
    assert volumes[mounts[key_dir]]["emptyDir"]["medium"] == "Memory"
    token_dir, token_file = args.hub_service_token_file.rsplit("/", 1)
    assert [i["path"] for i in volumes[mounts[token_dir]]["secret"]["items"]] == [token_file]
    # The init container copies the key from its Secret into that directory, private to the user.
    init = pod["initContainers"][0]
    source, target = init["command"][-2:]
    assert target == args.host_key
    assert "umask 077" in init["command"][2]
    init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    secret_volume = volumes[init_mounts[source.rsplit("/", 1)[0]]]
    assert secret_volume["secret"]["secretName"] == f"{FULLNAME}-gateway-host-key"
    assert [i["path"] for i in secret_volume["secret"]["items"]] == [key_file]


def test_without_hub_tokens_the_gateway_asks_no_hub() -> None:
    rendered = Rendered({"gateway": {"hubTokens": {"enabled": False}}})
    args = gateway_args(rendered)
    assert args.hub_api_url is None and args.hub_service_token_file is None
    secrets = {m["metadata"]["name"] for m in rendered.of_kind("Secret")}
    assert f"{FULLNAME}-gateway" not in secrets


def test_the_notes_warn_of_what_is_missing(default: Rendered, three_sites: Rendered) -> None:
    assert "gateway.hostKey.publicKey is empty" in default.notes
    assert "nobody may log in" in default.notes
    assert "WARNING" not in three_sites.notes
    assert "T2_A, T2_B, T2_LOCAL" in three_sites.notes


# The Hub's configuration, loaded as the Hub loads it ------------------------------------------

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@pytest.fixture
def hub_files(tmp_path: Path) -> Iterator[Path]:
    """What the hub container sees: the environment its Deployment sets, a kubeconfig."""
    (tmp_path / "config").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    env = {
        "RJQ_HUB_CONFIG_DIR": str(tmp_path / "config"),
        "RJQ_HUB_SECRET_DIR": str(tmp_path / "secret"),
        "RJQ_GATEWAY_HUB_TOKEN": "gateway-token-from-the-secret",
        "POD_NAMESPACE": NAMESPACE,
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
    }
    from kubernetes_asyncio.config import kube_config

    # kubernetes_asyncio reads $KUBECONFIG once, when first imported: set where it keeps it.
    with (
        mock.patch.dict("os.environ", env),
        mock.patch.object(
            kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig")
        ),
    ):
        yield tmp_path


def load_hub_config(rendered: Rendered, files: Path) -> Any:
    for name, text in rendered.get("ConfigMap", "hub")["data"].items():
        (files / "config" / name).write_text(text)
    passthrough = rendered.secret_data("hub")["passthrough.yaml"]
    (files / "secret" / "passthrough.yaml").write_text(passthrough)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(files / "config")).load_config()


def test_the_hub_config_uses_the_kube_remote_spawner(
    three_sites: Rendered, hub_files: Path
) -> None:
    from importlib.metadata import entry_points

    from remote_jobqueue.spawner.kube import KubeRemoteSpawner

    config = load_hub_config(three_sites, hub_files)
    assert config.JupyterHub.spawner_class == "kube-remote-jobqueue"
    (entry,) = entry_points(group="jupyterhub.spawners", name="kube-remote-jobqueue")
    assert entry.load() is KubeRemoteSpawner
    assert config.JupyterHub.hub_connect_url == f"http://{FULLNAME}-hub:8081"
    assert config.ConfigurableHTTPProxy.api_url == f"http://{FULLNAME}-proxy-api:8001"
    assert config.ConfigurableHTTPProxy.should_start is False
    auth = config.GenericOAuthenticator
    assert auth.client_id == THREE_SITES["oidc"]["clientId"]
    assert auth.token_url == THREE_SITES["oidc"]["tokenUrl"]
    assert auth.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"
    assert auth.allowed_groups == {"/cms"}
    assert config.Authenticator.enable_auth_state is True
    # The gateway's Hub service, with its token from the environment, not the ConfigMap.
    (service,) = config.JupyterHub.services
    assert service["name"] == "remote-jobqueue-gateway"
    assert service["api_token"] == "gateway-token-from-the-secret"
    assert {"admin:auth_state", "read:users"} <= set(config.JupyterHub.load_roles[-1]["scopes"])
    # hub.extraConfig ran, from the Secret.
    assert config.JupyterHub.concurrent_spawn_limit == 20


def test_the_hub_config_reads_the_issuers_endpoints_from_discovery(
    hub_files: Path, httpserver: Any
) -> None:
    issuer = httpserver.url_for("/realms/physics")
    httpserver.expect_request("/realms/physics/.well-known/openid-configuration").respond_with_json(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/auth",
            "token_endpoint": f"{issuer}/token",
            "userinfo_endpoint": f"{issuer}/userinfo",
        }
    )
    config = load_hub_config(Rendered({"oidc": {"issuer": issuer}}), hub_files)
    auth = config.GenericOAuthenticator
    assert (auth.authorize_url, auth.token_url, auth.userdata_url) == (
        f"{issuer}/auth",
        f"{issuer}/token",
        f"{issuer}/userinfo",
    )


async def test_the_users_pod_gets_the_catalogue_the_gateway_and_a_memory_token_dir(
    three_sites: Rendered, hub_files: Path
) -> None:
    import dask.config
    from kubernetes_asyncio.client import ApiClient

    from remote_jobqueue.spawner.kube import KubeRemoteSpawner

    config = load_hub_config(three_sites, hub_files)
    # The Hub's Dask config is the mounted catalogue.
    with dask.config.set(site_catalogue(three_sites)):
        spawner = KubeRemoteSpawner(_mock=True, config=config)
        try:
            spawner.user.name = "alice"
            assert sorted(spawner.sites) == ["T2_A", "T2_B", "T2_LOCAL"]
            pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
        finally:
            await spawner.api.api_client.close()
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "remote-jobqueue/lab:0.1.0"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    dask_config = mounts["/etc/dask/remote-jobqueue.yaml"]["configMap"]["name"]
    assert dask_config == f"{FULLNAME}-dask-config"
    assert mounts["/run/remote-jobqueue"]["emptyDir"]["medium"] == "Memory"
    assert mounts["/etc/remote-jobqueue/condor"]["configMap"]["name"] == f"{FULLNAME}-condor-ca"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DASK_REMOTE_JOBQUEUE__GATEWAY"] == repr(f"{FULLNAME}-gateway.{NAMESPACE}.svc:22")
    assert env["BEARER_TOKEN_FILE"] == "/run/remote-jobqueue/alice/bearer-token"
    assert env["XROOT_PROXY"].startswith(THREE_SITES["xrootd"]["hubCache"])
    assert env["_CONDOR_AUTH_SSL_CLIENT_CAFILE"] == "/etc/remote-jobqueue/condor/ca.pem"
