"""What a client needs for token-protected XRootD reads, and why a read was refused.

Storage that requires a token (XRootD's ``ztn`` with the SciTokens library, WLCG profile)
takes it from where every WLCG tool looks (``BEARER_TOKEN_FILE`` and the rest of
:func:`remote_jobqueue.tokens.find_bearer_token`), over TLS: the client verifies the server's
certificate with the CAs of ``X509_CERT_DIR``, a directory of PEM files under OpenSSL's hash
names. The site catalogue's ``xrootd-ca`` is that CA (public); jobs get it in
:data:`CA_VARIABLE` and write the directory themselves, so no path of the client's machine
needs to exist at a site.

The server says only "permission denied" or "no protocols left to try": the reason (expired,
another audience, no ``storage.read``) is in its log. :func:`explain_refusal` reads the token's
own claims, unverified, to say which, and what to do.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

#: In jobs: the storage CA(s), base64 of their DER, one after another separated by ``.``
#: (public data; an environment value cannot hold PEM's newlines).
CA_VARIABLE = "RJQ_XROOTD_CA"
#: Where a job writes them, under its scratch directory.
JOB_CA_DIR = ".xrootd-ca"
#: The scope a token needs to read (WLCG profile), relative to the storage's base path.
READ_SCOPE = "storage.read"


class StorageAccessDenied(PermissionError):
    """The storage refused a read for want of a valid token; the message says why."""


# The CA directory ----------------------------------------------------------------------------
def subject_hash(cert: x509.Certificate) -> str:
    """OpenSSL's ``X509_NAME_hash`` of the subject (``openssl x509 -hash``), as 8 hex digits.

    The SHA-1 of the name's canonical encoding (each string value as a UTF8String with ASCII
    upper case lowered and ASCII whitespace collapsed, as OpenSSL does; the RDN sets, each
    kept whole, without the outer SEQUENCE), first 4 bytes read little-endian. OpenSSL looks
    CAs up in ``X509_CERT_DIR`` by this name.
    """
    from cryptography.x509.name import _ASN1Type  # the one spelling of UTF8String it takes

    rdns = []
    for rdn in cert.subject.rdns:
        attributes = []
        for attribute in rdn:
            value = attribute.value
            if isinstance(value, str):
                value = _ASCII_SPACE.sub(" ", value).strip(_ASCII_SPACES)
                value = "".join(c.lower() if c.isascii() else c for c in value)
                attribute = x509.NameAttribute(attribute.oid, value, _type=_ASN1Type.UTF8String)
            attributes.append(attribute)
        rdns.append(x509.RelativeDistinguishedName(attributes))
    der = x509.Name(rdns).public_bytes()
    digest = hashlib.sha1(_strip_sequence(der)).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


_ASCII_SPACES = " \t\n\r\f\v"
_ASCII_SPACE = re.compile(f"[{_ASCII_SPACES}]+")


def _strip_sequence(der: bytes) -> bytes:
    """The content of a DER SEQUENCE (its tag and length removed)."""
    assert der[0] == 0x30, "a Name is a SEQUENCE"
    length = der[1]
    if length < 0x80:
        return der[2:]
    return der[2 + (length & 0x7F) :]


def write_ca_dir(pem: str, directory: Path) -> Path:
    """Write each certificate of ``pem`` into ``directory`` under its hash name (``<hash>.0``,
    ``.1`` for a second CA of the same name), as ``X509_CERT_DIR`` wants it; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    for cert in x509.load_pem_x509_certificates(pem.encode()):
        stem, n = subject_hash(cert), 0
        while f"{stem}.{n}" in taken:
            n += 1
        taken.add(f"{stem}.{n}")
        # A temporary file of its own: the worker processes of one job write the same names.
        fd, partial = tempfile.mkstemp(dir=directory, prefix=".partial-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(partial, 0o644)
        os.replace(partial, directory / f"{stem}.{n}")
    return directory


def ca_to_environment(pem: str) -> str:
    """``pem`` as the value of :data:`CA_VARIABLE`."""
    certs = x509.load_pem_x509_certificates(pem.encode())
    return ".".join(
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs
    )


def ca_from_environment(value: str) -> str:
    """The PEM that :func:`ca_to_environment` encoded."""
    certs = [x509.load_der_x509_certificate(base64.b64decode(p)) for p in value.split(".") if p]
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def use_storage_ca(directory: Path, environ: MutableMapping[str, str] = os.environ) -> bool:
    """In a job: trust :data:`CA_VARIABLE`'s CAs for XRootD TLS (``X509_CERT_DIR``). Call it
    before the XRootD client loads. Returns whether the job was given any."""
    value = environ.get(CA_VARIABLE)
    if not value:
        return False
    environ["X509_CERT_DIR"] = str(write_ca_dir(ca_from_environment(value), directory))
    return True


# Why a read was refused ----------------------------------------------------------------------
#: What the XRootD client says when the storage turned a token (or its absence) away.
_REFUSALS = re.compile(
    r"no protocols left to try|permission denied|\[3010\]|auth(entication)? failed|"
    r"not authorized|unable to authenticate",
    re.IGNORECASE,
)


def is_refusal(message: str) -> bool:
    return bool(_REFUSALS.search(message))


def explain_refusal(
    url: str,
    message: str,
    environ: Mapping[str, str] = os.environ,
    audience: str | None = None,
    now: float | None = None,
    tmp_dir: str = "/tmp",
) -> str:
    """Why the storage refused to read ``url`` (XRootD said ``message``), judged from the
    token this process would send, and what to do. Never includes the token."""
    from . import tokens

    found = tokens.find_bearer_token(environ, tmp_dir=tmp_dir)
    where = f"the storage refused to read {_without_query(url)} ({_scrubbed(message.strip())})"
    if found is None:
        return (
            f"{where}: no bearer token was found (BEARER_TOKEN_FILE, or the WLCG default "
            "paths); log in (remote-jobqueue login) or set BEARER_TOKEN_FILE"
        )
    origin = f"the bearer token in {found.path}" if found.path else "the bearer token"
    try:
        claims = tokens.token_claims_unverified(found.token)
    except tokens.InvalidToken:
        return f"{where}: {origin} is not a JWT the storage could check"
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= now:
        ago = int(now - exp)
        return (
            f"{where}: {origin} expired {ago} s ago "
            f"({time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(exp))}); "
            "log in again (remote-jobqueue login) or let the Hub refresh it"
        )
    scopes = str(claims.get("scope", "")).split()
    if not any(s == READ_SCOPE or s.startswith(f"{READ_SCOPE}:") for s in scopes):
        return (
            f"{where}: {origin} has no {READ_SCOPE} scope (it has: "
            f"{' '.join(scopes) or 'none'}); ask for a token with {READ_SCOPE}:/"
        )
    auds = claims.get("aud")
    auds = [auds] if isinstance(auds, str) else list(auds or [])
    if audience and audience not in auds and tokens.WLCG_ANY_AUDIENCE not in auds:
        return (
            f"{where}: {origin} is for {', '.join(auds) or 'no audience'}, not the storage's "
            f"{audience}; log in with --audience {audience}"
        )
    return (
        f"{where}: {origin} (issuer {claims.get('iss')}, subject {claims.get('sub')}, audience "
        f"{', '.join(auds) or 'none'}) was refused: the storage may not trust its issuer or "
        "take its audience, or its scope may not cover this path"
    )


@contextlib.contextmanager
def refusals_explained(url: str) -> Iterator[None]:
    """Turn the XRootD client's refusal of ``url`` (an ``OSError`` with the server's words)
    into :class:`StorageAccessDenied` saying why, judged from this process's token."""
    try:
        yield
    except OSError as err:
        if isinstance(err, StorageAccessDenied) or not is_refusal(str(err)):
            raise
        where = socket.gethostname()
        raise StorageAccessDenied(f"{explain_refusal(url, str(err))} (on {where})") from err


def _without_query(url: str) -> str:
    """A URL without its query (``?authz=`` would carry a token)."""
    return url.split("?", 1)[0]


def _scrubbed(message: str) -> str:
    """The client's message without the value of any ``authz=`` (uproot quotes the whole URL)."""
    return re.sub(r"(authz=)[^&\s]*", r"\1<hidden>", message)
