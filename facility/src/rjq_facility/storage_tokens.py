"""Token-protected reads on the facility's XRootD servers (``facility data --tokens``).

Every server then speaks TLS with a certificate of the facility CA and takes only ``ztn``
(a bearer token), which the SciTokens library checks against the facility issuer's keys,
seeded into its key cache (offline, as for the schedd: :mod:`rjq_facility.scitokens`). A
token must be a WLCG one with ``storage.read`` for the path and the storage's audience.

- The origin: ``base_path = /store``, so ``storage.read:/`` covers the dataset.
- A cache checks the *user's* token (``base_path = /``: forwarded paths are
  ``/root:/origin:port/store/...``) and reads upstream with a *service* token of its own
  (``BEARER_TOKEN_FILE`` in its container), which the next cache or the origin checks in turn.
  Users' tokens never leave the first server they reach.

Service tokens are signed by the facility's issuer for ``service:<server>`` with
``storage.read:/`` and live as long as the facility (a week); each start writes a new one.
"""

from __future__ import annotations

from pathlib import Path

from remote_jobqueue.tokens import WLCG_ANY_AUDIENCE, write_private_file

from . import issuer, scitokens
from .config import FacilityConfig

#: The audience the facility's XRootD servers take tokens for (besides the WLCG "any").
STORAGE_AUDIENCE = "remote-jobqueue-storage"
#: A cache's own token: a week, the life of a development facility.
SERVICE_TOKEN_LIFETIME = 7 * 86400


def tls_dir(home: Path) -> Path:
    return home / "tls"


def ca_dir(home: Path) -> Path:
    """The server's ``X509_CERT_DIR`` (the CA under its hash name) for its own upstream reads."""
    return tls_dir(home) / "certificates"


def key_cache_home(home: Path) -> Path:
    """``XDG_CACHE_HOME`` of the server: scitokens-cpp keeps its key cache below it."""
    return home / "xdg-cache"


def service_token_file(home: Path) -> Path:
    return home / "service-token"


def config_lines(home: Path) -> list[str]:
    """The server's settings: TLS, ``ztn`` only, SciTokens authorization."""
    tls = tls_dir(home)
    return [
        f"xrd.tls {tls / 'cert.pem'} {tls / 'key.pem'}",
        f"xrd.tlsca certfile {tls / 'ca.pem'}",
        # Without seclib no protocol is offered and every login is anonymous.
        "xrootd.seclib libXrdSec.so",
        "sec.protocol ztn",
        "sec.protbind * only ztn",
        "ofs.authorize 1",
        f"ofs.authlib libXrdAccSciTokens.so config={home / 'scitokens.cfg'}",
    ]


def scitokens_config(cfg: FacilityConfig, base_path: str) -> str:
    return (
        "[Global]\n"
        f"audience = {STORAGE_AUDIENCE}, {WLCG_ANY_AUDIENCE}\n"
        "\n"
        "[Issuer facility]\n"
        f"issuer = {cfg.issuer_url}\n"
        f"base_path = {base_path}\n"
        "default_user = xrootd\n"
    )


def prepare(
    cfg: FacilityConfig,
    name: str,
    home: Path,
    addresses: list[str],
    owner: tuple[int, int],
    *,
    is_cache: bool,
) -> dict[str, str]:
    """Write a server's certificate, SciTokens settings, key cache and (for a cache) service
    token under ``home``; returns the environment its container needs."""
    from remote_jobqueue.storage_auth import write_ca_dir

    uid, gid = owner
    tls = tls_dir(home)
    scitokens.server_certificate(cfg, name, addresses, tls, uid, gid)
    ca_pem = scitokens.ca_file(cfg).read_text()
    (tls / "ca.pem").write_text(ca_pem)
    write_ca_dir(ca_pem, ca_dir(home))
    (home / "scitokens.cfg").write_text(scitokens_config(cfg, "/" if is_cache else "/store"))
    keys = issuer.Issuer(cfg.state_dir, cfg.issuer_url)
    scitokens.seed_key_cache(key_cache_home(home), cfg.issuer_url, {"keys": [keys.jwk]}, uid, gid)
    env = {"XDG_CACHE_HOME": str(key_cache_home(home)), "X509_CERT_DIR": str(ca_dir(home))}
    if is_cache:
        token = keys.service_token(
            f"service:{name}", ["storage.read:/"], STORAGE_AUDIENCE, SERVICE_TOKEN_LIFETIME
        )
        write_private_file(service_token_file(home), token, uid=uid, gid=gid)
        env["BEARER_TOKEN_FILE"] = str(service_token_file(home))
    return env
