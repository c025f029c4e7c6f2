"""`remote-jobqueue configure <facility URL or file>`: a laptop's or login node's one setup step.

A facility publishes one document of public settings (no secret in it):

```yaml
remote-jobqueue:        # Dask config: the site catalogue, the issuer (for `login`), ...
  sites: {...}
  issuer: https://iam.example.org
htcondor:
  collector: cm.example.org:9618
  ca: "-----BEGIN CERTIFICATE-----..."   # the schedd's CA (SciTokens run over SSL)
```

`configure` writes the Dask part to ``~/.config/dask/remote-jobqueue.yaml`` (where Dask looks
by default) and an HTCondor client configuration to ``~/.config/remote-jobqueue/`` that
submits with the user's bearer token (found by WLCG discovery, as `login` stores it); the
package points the bindings there when nothing else names a configuration (`apply_defaults`).
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .errors import RemoteJobqueueError

#: Where `configure` keeps the HTCondor client configuration and the pool's CA.
CONFIG_DIR = Path("~/.config/remote-jobqueue")
CONDOR_CONFIG = "condor_config"
POOL_CA = "pool-ca.pem"


def load(source: str) -> dict[str, Any]:
    """The facility's document, from a file or an http(s) URL, checked."""
    try:
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=30) as answer:
                text = answer.read().decode()
        else:
            text = Path(source).read_text()
    except OSError as err:
        raise RemoteJobqueueError(
            f"cannot read the facility's settings from {source}: {err}"
        ) from err
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc.get("remote-jobqueue"), dict) or not doc["remote-jobqueue"].get("sites"):
        raise RemoteJobqueueError(f"{source} names no sites (remote-jobqueue.sites)")
    condor = doc.get("htcondor") or {}
    if not condor.get("collector"):
        raise RemoteJobqueueError(f"{source} names no collector (htcondor.collector)")
    _check_settings(doc["remote-jobqueue"], source)
    return doc


def _check_settings(settings: dict[str, Any], source: str) -> None:
    """The Dask part against the project's schema, before anything is written."""
    import dask.config

    from . import config

    with dask.config.set({"remote-jobqueue": settings}):
        try:
            config.settings()
            config.site_catalogue()
        except RemoteJobqueueError as err:
            raise RemoteJobqueueError(f"{source}: {err}") from err


def write(doc: dict[str, Any], home: Path | None = None) -> list[Path]:
    """Write the user's Dask and HTCondor client settings; returns the files written."""
    home = home or Path.home()
    dask_file = home / ".config" / "dask" / "remote-jobqueue.yaml"
    dask_file.parent.mkdir(parents=True, exist_ok=True)
    dask_file.write_text(yaml.safe_dump({"remote-jobqueue": doc["remote-jobqueue"]}))
    own = home / str(CONFIG_DIR).removeprefix("~/")
    own.mkdir(parents=True, exist_ok=True)
    own.chmod(0o700)
    condor = doc["htcondor"]
    lines = [
        "# Written by `remote-jobqueue configure`: this facility's pool, as a client.",
        f"COLLECTOR_HOST = {condor['collector']}",
        # The bearer token `remote-jobqueue login` stores, found by WLCG discovery.
        "SEC_CLIENT_AUTHENTICATION_METHODS = SCITOKENS",
    ]
    written = [dask_file]
    if condor.get("ca"):
        ca = own / POOL_CA
        ca.write_text(condor["ca"])
        lines.append(f"AUTH_SSL_CLIENT_CAFILE = {ca}")
        written.append(ca)
    (own / CONDOR_CONFIG).write_text("\n".join(lines) + "\n")
    return [*written, own / CONDOR_CONFIG]


def apply_defaults(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Point the HTCondor bindings at `configure`'s file if nothing else names one (they read
    ``CONDOR_CONFIG`` once, at their import, so this runs when the package is imported)."""
    if "CONDOR_CONFIG" in environ:
        return
    path = Path(environ.get("HOME") or Path.home()) / ".config" / "remote-jobqueue" / CONDOR_CONFIG
    if path.is_file():
        environ["CONDOR_CONFIG"] = str(path)
