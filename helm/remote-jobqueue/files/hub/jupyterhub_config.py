"""JupyterHub configuration of the remote-jobqueue Helm chart (its hub ConfigMap).

Everything comes from files the chart mounts and environment variables it sets:

- ``settings.yaml`` beside this file (the same ConfigMap, nothing secret in it): names of the
  release's Services and ConfigMaps, the OIDC provider, the gateway, the users' servers;
- ``passthrough.yaml`` in the Secret directory: ``hub.config`` (traitlets sections) and
  ``hub.extraConfig`` (Python snippets), which may hold secrets;
- environment, from Secrets: ``CONFIGPROXY_AUTH_TOKEN``, ``JPY_COOKIE_SECRET`` and
  ``JUPYTERHUB_CRYPT_KEY`` (read by JupyterHub itself), ``OAUTH_CLIENT_SECRET`` (by
  OAuthenticator), ``RJQ_GATEWAY_HUB_TOKEN`` (the gateway's Hub service token);
- the site catalogue, from the Dask config file mounted in ``/etc/dask``: the spawner reads it
  (``KubeRemoteSpawner.sites`` defaults to the Hub's Dask config).

``RJQ_HUB_CONFIG_DIR`` and ``RJQ_HUB_SECRET_DIR`` move the two directories (the chart's tests
load this file with rendered settings).
"""

import os
from pathlib import Path

import yaml

from remote_jobqueue.spawner.authhooks import CUSTOM_SCOPES, USER_ROLE, RefreshAhead
from remote_jobqueue.spawner.vault import RefreshTokenVault

c = get_config()  # noqa: F821

CONFIG_DIR = Path(os.environ.get("RJQ_HUB_CONFIG_DIR", "/usr/local/etc/jupyterhub/config"))
SECRET_DIR = Path(os.environ.get("RJQ_HUB_SECRET_DIR", "/usr/local/etc/jupyterhub/secret"))

settings = yaml.safe_load((CONFIG_DIR / "settings.yaml").read_text())
names = settings["names"]
hub = settings["hub"]
oidc = settings["oidc"]
gateway = settings["gateway"]
singleuser = settings["singleuser"]
dask = settings["dask"]
condor = settings["condor"]
xrootd = settings["xrootd"]

# The Hub, its proxy (in a pod of its own) and its database ---------------------------------
c.JupyterHub.hub_bind_url = f"http://:{hub['port']}"
c.JupyterHub.hub_connect_url = f"http://{names['hub']}:{hub['port']}"
c.JupyterHub.base_url = hub["baseUrl"]
c.ConfigurableHTTPProxy.api_url = f"http://{names['proxyApi']}:{settings['proxy']['apiPort']}"
c.ConfigurableHTTPProxy.should_start = False
# Users' servers outlive a restart of the Hub.
c.JupyterHub.cleanup_servers = False

data_dir = Path(hub["dataDir"])
if hub["db"]["type"] == "url":
    c.JupyterHub.db_url = hub["db"]["url"]
elif hub["db"]["type"] == "sqlite-memory":
    c.JupyterHub.db_url = "sqlite://"
else:
    c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"

# Login with the OIDC provider ----------------------------------------------------------------
c.JupyterHub.authenticator_class = "generic-oauth"
c.Authenticator.enable_auth_state = True  # encrypted with JUPYTERHUB_CRYPT_KEY
c.Authenticator.auth_refresh_age = hub["authRefreshAge"]
c.Authenticator.allow_all = oidc["allowAll"]
c.Authenticator.allowed_users = set(oidc["allowedUsers"])
c.Authenticator.admin_users = set(oidc["adminUsers"])

auth = c.GenericOAuthenticator
auth.client_id = oidc["clientId"]  # the secret, if any: OAUTH_CLIENT_SECRET
public_url = hub["publicUrl"].rstrip("/") + hub["baseUrl"].rstrip("/")
auth.oauth_callback_url = f"{public_url}/hub/oauth_callback"
auth.username_claim = oidc["usernameClaim"]
auth.scope = list(oidc["scopes"])
if oidc["allowedGroups"]:
    auth.allowed_groups = set(oidc["allowedGroups"])
    auth.claim_groups_key = oidc["groupsClaim"]

endpoints = {
    "authorize_url": oidc["authorizeUrl"],
    "token_url": oidc["tokenUrl"],
    "userdata_url": oidc["userdataUrl"],
}
if not all(endpoints.values()):
    from remote_jobqueue.tokens import fetch_discovery

    discovery = fetch_discovery(oidc["issuer"])
    for trait, key in (
        ("authorize_url", "authorization_endpoint"),
        ("token_url", "token_endpoint"),
        ("userdata_url", "userinfo_endpoint"),
    ):
        endpoints[trait] = endpoints[trait] or discovery[key]
for trait, url in endpoints.items():
    setattr(auth, trait, url)

# Refresh tokens stay in the Hub (users may read their own auth_state); tokens are renewed
# ahead of expiry, with the same margin as the servers' refreshers.
vault = RefreshTokenVault(data_dir / "refresh-tokens")
auth.modify_auth_state_hook = vault.modify_auth_state
auth.refresh_user_hook = RefreshAhead(margin=hub["refreshMargin"], vault=vault)

c.JupyterHub.custom_scopes = CUSTOM_SCOPES
roles = [USER_ROLE]
if gateway["hubService"]:
    # The gateway checks users' Hub API tokens and reads their subject with a token of its own.
    c.JupyterHub.services = [
        {"name": gateway["hubService"], "api_token": os.environ["RJQ_GATEWAY_HUB_TOKEN"]}
    ]
    roles.append(
        {
            "name": gateway["hubService"],
            "scopes": ["admin:auth_state", "read:users"],
            "services": [gateway["hubService"]],
        }
    )
c.JupyterHub.load_roles = roles

# Users' servers: KubeSpawner with remote-jobqueue's token file, refresher and settings -------
c.JupyterHub.spawner_class = "kube-remote-jobqueue"
spawner = c.KubeRemoteSpawner
spawner.namespace = os.environ.get("POD_NAMESPACE", "default")
spawner.common_labels = dict(settings["labels"])
spawner.image = singleuser["image"]
spawner.image_pull_policy = singleuser["imagePullPolicy"]
spawner.image_pull_secrets = [s["name"] for s in singleuser["imagePullSecrets"]]
spawner.cmd = list(singleuser["cmd"])
spawner.default_url = singleuser["defaultUrl"]
spawner.start_timeout = singleuser["startTimeout"]
spawner.uid = singleuser["uid"]
spawner.fs_gid = singleuser["fsGid"]
spawner.automount_service_account_token = False
spawner.container_security_context = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
spawner.pod_security_context = {"seccompProfile": {"type": "RuntimeDefault"}}
spawner.node_selector = dict(singleuser["nodeSelector"])
spawner.tolerations = list(singleuser["tolerations"])
spawner.environment = dict(singleuser["extraEnv"])
for trait, value in (
    ("cpu_guarantee", singleuser["cpu"].get("guarantee")),
    ("cpu_limit", singleuser["cpu"].get("limit")),
    ("mem_guarantee", singleuser["memory"].get("guarantee")),
    ("mem_limit", singleuser["memory"].get("limit")),
):
    if value is not None:
        setattr(spawner, trait, value)

runtime = singleuser["runtimeDir"].rstrip("/")
# The token's volume (a memory-backed emptyDir at runtime_dir's parent) is KubeRemoteSpawner's
# own: it adds it to every pod it builds (kube.py).
volumes = [
    {"name": "rjq-dask-config", "configMap": {"name": names["daskConfig"]}},
]
mounts = [
    {
        "name": "rjq-dask-config",
        "mountPath": f"{dask['dir'].rstrip('/')}/{dask['file']}",
        "subPath": dask["file"],
        "readOnly": True,
    },
]
if condor["caFile"]:
    volumes.append({"name": "rjq-condor-ca", "configMap": {"name": names["condorCa"]}})
    mounts.append({"name": "rjq-condor-ca", "mountPath": condor["caDir"], "readOnly": True})
storage = singleuser["storage"]
if storage["type"] == "dynamic":
    spawner.storage_pvc_ensure = True
    spawner.pvc_name_template = "claim-{user_server}"
    spawner.storage_capacity = storage["capacity"]
    spawner.storage_access_modes = ["ReadWriteOnce"]
    if storage["storageClass"]:
        spawner.storage_class = storage["storageClass"]
    volumes.append({"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}})
    mounts.append({"name": "home", "mountPath": storage["homeMountPath"]})
spawner.volumes = volumes
spawner.volume_mounts = mounts

spawner.runtime_dir = f"{runtime}/{{username}}"
spawner.refresher_python = singleuser["python"]
spawner.refresh_margin = hub["refreshMargin"]
# Clients in the cluster reach the gateway by its Service; bundles at the sites dial the
# external address the site catalogue names.
spawner.gateway = gateway["address"]
if gateway["publicKey"]:
    spawner.gateway_host_key = gateway["publicKey"]
if dask["settings"]:
    spawner.dask_settings = dict(dask["settings"])
if condor["collector"]:
    spawner.collector = condor["collector"]
if condor["caFile"]:
    spawner.condor_ca_file = condor["caFile"]
spawner.condor_auth_methods = condor["authMethods"]
spawner.condor_settings = dict(condor["settings"])
if xrootd["hubCache"]:
    spawner.xrootd_cache = xrootd["hubCache"]
if xrootd["origin"]:
    spawner.xrootd_origin = xrootd["origin"]

# zero-to-jupyterhub's hub.config and hub.extraConfig, last, so they can override the above ---
passthrough_file = SECRET_DIR / "passthrough.yaml"
passthrough = yaml.safe_load(passthrough_file.read_text()) if passthrough_file.exists() else {}
for section, values in (passthrough.get("config") or {}).items():
    if not section[:1].isupper():
        raise SystemExit(f"hub.config.{section}: sections are Configurable class names")
    c[section].update(values)
for name, code in sorted((passthrough.get("extraConfig") or {}).items()):
    exec(compile(code, f"hub.extraConfig.{name}", "exec"))
