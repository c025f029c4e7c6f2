"""`RemoteJobqueueSpawnerMixin`: what any JupyterHub spawner needs to give a user remote clusters.

Mixed in before a concrete spawner (``class S(RemoteJobqueueSpawnerMixin, LocalProcessSpawner)``),
it adds to the server's environment the HTCondor, gateway, site-catalogue and XRootD settings
(`environment.py`), asks the Hub for a server token that may read the user's ``auth_state``,
and wraps the single-user command in the refresher, which writes the access token to a 0600
file (``BEARER_TOKEN_FILE``) and keeps it fresh for as long as the server runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from traitlets import Bool, Dict, Float, Int, List, TraitType, Unicode, Union, default, validate
from traitlets.config import LoggingConfigurable

from .. import config
from ..gateway.protocol import GATEWAY_SCOPE
from .environment import ServerSettings, server_environment, without_secrets

#: What the server token must be able to do: the default server scopes, plus reading the
#: user's own auth_state (the refresher pulls fresh tokens with it).
AUTH_STATE_SCOPE = "admin:auth_state!user"
#: The server's clusters log in to the gateway with the server's token (see `gateway.hubauth`).
GATEWAY_LOGIN_SCOPE = f"{GATEWAY_SCOPE}!user"
SERVER_SCOPES = (
    "users:activity!user",
    "access:servers!server",
    AUTH_STATE_SCOPE,
    GATEWAY_LOGIN_SCOPE,
)


#: The traits that are `remote-jobqueue` Dask settings of the user's server, by schema key.
SETTING_TRAITS = {
    "sites": "sites",
    "site": "default_site",
    "gateway": "gateway",
    "gateway-host-key": "gateway_host_key",
}
_TRAIT_TYPES = {
    "string": Unicode,
    "integer": Int,
    "number": Float,
    "boolean": Bool,
    "object": Dict,
    "array": List,
}


def setting_trait(key: str, more_help: str = "") -> TraitType:
    """A trait for the server's ``remote-jobqueue.<key>``: its type and help from the schema.

    A setting that is not a mapping or a list is None until set: the server keeps its default.
    """
    types = config.schema_of(key)["type"]
    kinds = [_TRAIT_TYPES[t] for t in ([types] if isinstance(types, str) else types) if t != "null"]
    text = f"`remote-jobqueue.{key}` for the user's server: {config.describe(key)} {more_help}"
    kw: dict[str, Any] = {"help": text.strip()}
    if kinds in ([Dict], [List]):
        trait = kinds[0](**kw)
    elif len(kinds) == 1:
        trait = kinds[0](None, allow_none=True, **kw)
    else:
        trait = Union([k() for k in kinds], default_value=None, allow_none=True, **kw)
    return trait.tag(config=True)


class RemoteJobqueueSpawnerMixin(LoggingConfigurable):
    """Token file, refresher and remote-jobqueue settings for any spawner (mix in first)."""

    sites = setting_trait("sites", "Default: that Dask config section as the Hub process sees it.")

    @default("sites")
    def _sites_default(self) -> dict[str, dict[str, str]]:
        return config.site_catalogue()

    default_site = setting_trait("site")
    gateway = setting_trait("gateway")
    gateway_host_key = setting_trait("gateway-host-key")
    dask_settings = Dict(
        help="""More `remote-jobqueue` Dask settings for the user's server, by key
        (``{"lease": 300, "tls": True}``; any key of remote-jobqueue-schema.yaml). The traits
        of their own (sites, default_site, gateway, gateway_host_key) win over these.""",
    ).tag(config=True)

    @validate(*SETTING_TRAITS.values(), "dask_settings")
    def _check_setting(self, proposal: Any) -> Any:
        """Refuse what the schema refuses as soon as the Hub's configuration sets it."""
        value, name = proposal["value"], proposal["trait"].name
        if name == "dask_settings":
            return config.check(value)
        key = next(k for k, trait in SETTING_TRAITS.items() if trait == name)
        return value if value is None else config.check({key: value})[key]

    collector = Unicode(
        None,
        allow_none=True,
        help="HTCondor COLLECTOR_HOST for the server; default: the first site's collector.",
    ).tag(config=True)

    @default("collector")
    def _collector_default(self) -> str | None:
        collectors = ((site or {}).get("collector") for site in self.sites.values())
        return next((c for c in collectors if c), None)

    condor_auth_methods = Unicode(
        "SCITOKENS", help="SEC_CLIENT_AUTHENTICATION_METHODS for the user's HTCondor client."
    ).tag(config=True)
    condor_ca_file = Unicode(
        None,
        allow_none=True,
        help="CA certificate the HTCondor client trusts for the schedd's SSL (SciTokens need it).",
    ).tag(config=True)
    condor_settings = Dict(
        help="More HTCondor client settings, passed as _CONDOR_<NAME> environment variables."
    ).tag(config=True)
    xrootd_cache = Unicode(
        None, allow_none=True, help="root://host:port of the XRootD cache nearest the Hub."
    ).tag(config=True)
    xrootd_origin = Unicode(
        None, allow_none=True, help="root://host:port of the data origin (RJQ_XROOTD_ORIGIN)."
    ).tag(config=True)
    runtime_dir = Unicode(
        "/run/remote-jobqueue/{username}",
        help="""Private directory (0700, the user's) of the server's token file and XRootD plugin
        conf; ``{username}`` is replaced.""",
    ).tag(config=True)
    token_file_name = Unicode("bearer-token", help="Name of the token file in runtime_dir.").tag(
        config=True
    )
    refresh_margin = Float(
        300.0,
        help="""Renew the token this many seconds before it expires (at most half its
        lifetime). Use the same value for `RefreshAhead` on the authenticator.""",
    ).tag(config=True)
    refresher = Bool(
        True, help="Wrap the single-user command in the token refresher (keep this on)."
    ).tag(config=True)
    refresher_python = Unicode(
        sys.executable, help="Python of the user's server that has remote_jobqueue installed."
    ).tag(config=True)
    default_cmd = List(
        ["jupyterhub-singleuser"],
        minlen=1,
        help="""What the refresher starts when ``cmd`` is None (KubeSpawner's default, "the
        image's command"): the Hub cannot read an image's CMD, so name it here if it is not
        ``jupyterhub-singleuser`` (the CMD of docker/lab and of the Zero to JupyterHub
        images). ``args`` follow it, as they follow ``cmd``.""",
    ).tag(config=True)
    _cmd_wrapped = False

    # The server token must read the user's auth_state to pull fresh tokens.
    @default("server_token_scopes")
    def _server_token_scopes_default(self) -> list[str]:
        return list(SERVER_SCOPES)

    def server_dask_settings(self) -> dict[str, Any]:
        """The server's `remote-jobqueue` Dask settings: `dask_settings`, then the traits."""
        named = {key: getattr(self, trait) for key, trait in SETTING_TRAITS.items()}
        return {**self.dask_settings, **{k: v for k, v in named.items() if v is not None}}

    def remote_jobqueue_settings(self) -> ServerSettings:
        return ServerSettings(
            runtime_dir=self.runtime_dir.format(username=self.user.name),
            token_file_name=self.token_file_name,
            dask=self.server_dask_settings(),
            collector=self.collector,
            condor_auth_methods=self.condor_auth_methods,
            condor_ca_file=self.condor_ca_file,
            condor_settings={k: str(v) for k, v in self.condor_settings.items()},
            xrootd_cache=self.xrootd_cache,
            xrootd_origin=self.xrootd_origin,
            refresh_margin=self.refresh_margin,
        )

    def get_env(self) -> dict[str, str]:
        env = super().get_env()  # type: ignore[misc]
        env.update(server_environment(self.remote_jobqueue_settings()))
        env, dropped = without_secrets(env)
        if dropped:
            self.log.warning("not passing credentials to %s's server: %s", self.user.name, dropped)
        return env

    def refresher_command(self, cmd: list[str]) -> list[str]:
        """``cmd`` started by the refresher launcher, which then execs it (same pid)."""
        return [self.refresher_python, "-m", "remote_jobqueue.spawner.refresher", "--", *cmd]

    @contextmanager
    def refresher_wrapped_cmd(self) -> Iterator[None]:
        """``self.cmd`` wrapped in the refresher while the spawner builds the server's command.

        A ``cmd`` of None (KubeSpawner's default: the image's own command, which the Hub cannot
        see) wraps `default_cmd` instead. Nested uses wrap once. `KubeRemoteSpawner` wraps in
        ``get_pod_manifest`` instead of `start`, after the user's profile has set ``cmd``.
        """
        if not self.refresher or self._cmd_wrapped:
            yield
            return
        original = self.cmd  # type: ignore[has-type]
        self.cmd = self.refresher_command(list(original or self.default_cmd))
        self._cmd_wrapped = True
        try:
            yield
        finally:
            self.cmd = original
            self._cmd_wrapped = False

    async def start(self) -> Any:
        with self.refresher_wrapped_cmd():
            return await super().start()  # type: ignore[misc]
