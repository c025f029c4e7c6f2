"""SciTokens on the facility's schedd: the issuer's own access tokens are all a user needs.

HTCondor validates SciTokens with scitokens-cpp, which fetches the issuer's keys over HTTPS.
The facility's issuer is plain HTTP on a private bridge, so its JWKS is seeded into the key
cache (a far-future expiry: the issuer's key never changes while its state directory lives).
SCITOKENS authentication runs inside SSL, so the schedd gets a certificate from a facility CA
that clients trust (``AUTH_SSL_CLIENT_CAFILE``). A mapfile turns (issuer, sub) into
``user@<uid domain>``, the same identity the user's IDTOKEN carries.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import sqlite3
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from remote_jobqueue.tokens import write_private_file

from .config import FacilityConfig

#: Key-cache entries never expire (~100 years): nothing refreshes them over HTTP.
FOREVER = 100 * 365 * 86400


def ssl_dir(cfg: FacilityConfig) -> Path:
    return cfg.state_dir / "condor" / "ssl"


def ca_file(cfg: FacilityConfig) -> Path:
    """The CA clients trust for the schedd's SSL (public; readable by everyone)."""
    return ssl_dir(cfg) / "ca.pem"


def key_cache_dir(cfg: FacilityConfig) -> Path:
    """``SEC_SCITOKENS_CACHE`` of the hub (scitokens-cpp appends ``scitokens/``)."""
    return cfg.state_dir / "condor" / "scitokens-cache"


def mapfile_path(cfg: FacilityConfig) -> Path:
    return cfg.state_dir / "condor" / "certificate_mapfile"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    sans: list[x509.GeneralName] = (),  # type: ignore[assignment]
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def ca_key_file(cfg: FacilityConfig) -> Path:
    """The CA's private key (0600, root's): it signs the schedd's and the XRootD servers'
    certificates, and stays with the state directory so they keep chaining to one CA."""
    return ssl_dir(cfg) / "ca.key"


def facility_ca(cfg: FacilityConfig) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The facility CA, made once per state directory (a state from before the CA's key was
    kept gets a new CA, and every certificate is made again)."""
    d = ssl_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    if ca_file(cfg).exists() and ca_key_file(cfg).exists():
        key = serialization.load_pem_private_key(ca_key_file(cfg).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(ca_file(cfg).read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("remote-jobqueue facility CA", key, None)
    write_private_file(ca_key_file(cfg), _pem_key(key))
    ca_file(cfg).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ca_file(cfg).chmod(0o644)
    for old in d.glob("schedd.*"):  # signed by a CA that is gone
        old.unlink()
    return ca, key


def server_certificate(
    cfg: FacilityConfig, name: str, addresses: list[str], directory: Path, uid: int, gid: int
) -> tuple[Path, Path]:
    """A certificate of the facility CA for a server reached at ``addresses`` (its IPs), the
    key 0600 and owned by the server's user; returns (cert, key). Made anew each call."""
    ca, ca_key = facility_ca(cfg)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(f"{name}.{cfg.uid_domain}")]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    # XRootD's client matches the host it dialled, an address here, against DNS names only
    # ("hostname not in SAN extension"): each address is a DNS name too.
    sans += [x509.DNSName(a) for a in addresses]
    cert = _cert(f"{name}.{cfg.uid_domain}", key, (ca, ca_key), sans=sans)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    write_private_file(key_path, _pem_key(key), uid=uid, gid=gid)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)
    return cert_path, key_path


def make_certificates(cfg: FacilityConfig, uid: int, gid: int) -> tuple[Path, Path]:
    """The schedd's certificate of the facility CA (for the pool's address); (cert, key).

    Made once per state directory: clients keep trusting the same CA across restarts.
    """
    ca, ca_key = facility_ca(cfg)
    d = ssl_dir(cfg)
    cert_path, key_path = d / "schedd.pem", d / "schedd.key"
    if not (cert_path.exists() and key_path.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        host = f"hub.{cfg.uid_domain}"
        # With NO_DNS, HTCondor names the host after its address (10-213-77-2.<domain>) and
        # checks that name against the certificate.
        alias = f"{cfg.pool_address.replace('.', '-')}.{cfg.uid_domain}"
        sans: list[x509.GeneralName] = [
            x509.DNSName(alias),
            x509.DNSName(host),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address(cfg.pool_address)),
        ]
        cert = _cert(host, key, (ca, ca_key), sans=sans)
        write_private_file(key_path, _pem_key(key), uid=uid, gid=gid)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for public in (cert_path, ca_file(cfg)):
        public.chmod(0o644)
    return cert_path, key_path


def seed_key_cache(cache_home: Path, issuer_url: str, jwks: dict, uid: int, gid: int) -> Path:
    """Put ``jwks`` for ``issuer_url`` into scitokens-cpp's key cache under ``cache_home``."""
    d = cache_home / "scitokens"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "scitokens_cpp.sqllite"
    now = int(time.time())
    entry = json.dumps({"jwks": jwks, "expires": now + FOREVER, "next_update": now + FOREVER})
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS keycache "
            "(issuer text UNIQUE PRIMARY KEY NOT NULL, keys text NOT NULL)"
        )
        db.execute("INSERT OR REPLACE INTO keycache VALUES (?, ?)", (issuer_url, entry))
    db.close()
    for p in (cache_home, d, path):
        os.chown(p, uid, gid)
    return path


def mapfile(issuer_url: str, subjects: dict[str, str], uid_domain: str) -> str:
    """CERTIFICATE_MAPFILE lines: ``SCITOKENS <issuer>,<sub> <user>@<domain>``.

    Literal keys (``CERTIFICATE_MAPFILE_ASSUME_HASH_KEYS``): exact matches, nothing to escape.
    Without that setting HTCondor takes every key as a regex *including* its ``/`` delimiters.
    """
    return "".join(
        f"SCITOKENS {issuer_url},{sub} {user}@{uid_domain}\n"
        for user, sub in sorted(subjects.items())
    )


#: The audience the pool's schedd takes SciTokens for (besides the WLCG "any" audience).
POOL_AUDIENCE = "remote-jobqueue-pool"


def schedd_config(cfg: FacilityConfig) -> str:
    """Settings for the hub's daemons: accept SCITOKENS besides FS and IDTOKENS."""
    from remote_jobqueue.tokens import WLCG_ANY_AUDIENCE

    d = ssl_dir(cfg)
    return f"""\
# SciTokens from the facility issuer ({cfg.issuer_url}), validated offline.
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS, SCITOKENS
AUTH_SSL_SERVER_CERTFILE = {d / "schedd.pem"}
AUTH_SSL_SERVER_KEYFILE = {d / "schedd.key"}
AUTH_SSL_CLIENT_CAFILE = {ca_file(cfg)}
CERTIFICATE_MAPFILE = {mapfile_path(cfg)}
CERTIFICATE_MAPFILE_ASSUME_HASH_KEYS = true
SEC_SCITOKENS_CACHE = {key_cache_dir(cfg)}
SCITOKENS_SERVER_AUDIENCE = {POOL_AUDIENCE} {WLCG_ANY_AUDIENCE}
"""


def setup(cfg: FacilityConfig, uid: int, gid: int) -> None:
    """Certificates, key cache and mapfile, before the hub's daemons start."""
    from . import issuer

    issuer.ensure_state(cfg.state_dir, cfg.users, cfg.issuer_url, [cfg.hub_address])
    make_certificates(cfg, uid, gid)
    keys = issuer.Issuer(cfg.state_dir, cfg.issuer_url)
    seed_key_cache(key_cache_dir(cfg), cfg.issuer_url, {"keys": [keys.jwk]}, uid, gid)
    subjects = {user: keys.users[user]["sub"] for user in cfg.users}
    mapfile_path(cfg).write_text(mapfile(cfg.issuer_url, subjects, cfg.uid_domain))
    mapfile_path(cfg).chmod(0o644)
