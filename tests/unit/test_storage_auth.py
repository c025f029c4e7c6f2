"""What a client needs for token-protected reads, and why a read was refused.

Specification:
- the CA directory names each CA as OpenSSL looks it up (``openssl x509 -hash``), whatever
  the case and spacing of its subject;
- a job gets the CAs through one environment variable and writes the directory itself;
- a refusal is explained from the token this process would send: none found, expired, no
  ``storage.read``, another audience; the explanation never holds the token.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from remote_jobqueue import storage_auth
from remote_jobqueue.tokens import WLCG_ANY_AUDIENCE, write_private_file


def self_signed(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Certificate:
    return self_signed_name(x509.Name([x509.NameAttribute(oid, v) for oid, v in attributes]))


def self_signed_name(name: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize(
    "attributes",
    [
        [(NameOID.COMMON_NAME, "remote-jobqueue facility CA")],
        [(NameOID.COMMON_NAME, "  Mixed   Case  CA ")],
        [
            (NameOID.COUNTRY_NAME, "IT"),
            (NameOID.ORGANIZATION_NAME, "INFN"),
            (NameOID.COMMON_NAME, "INFN Certification Authority"),
        ],
        [(NameOID.COMMON_NAME, "Ünïcödé CA ÀÉ")],  # only ASCII is folded
        "multi-valued",
    ],
)
def test_the_ca_directory_names_a_ca_as_openssl_does(tmp_path: Path, attributes) -> None:
    if attributes == "multi-valued":  # one RDN of two attributes, kept as one set
        cert = self_signed_name(
            x509.Name(
                [
                    x509.RelativeDistinguishedName(
                        [
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Facility"),
                            x509.NameAttribute(NameOID.COMMON_NAME, "Two In One CA"),
                        ]
                    )
                ]
            )
        )
    else:
        cert = self_signed(*attributes)
    (tmp_path / "ca.pem").write_text(pem(cert))
    openssl = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(tmp_path / "ca.pem")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert storage_auth.subject_hash(cert) == openssl
    directory = storage_auth.write_ca_dir(pem(cert), tmp_path / "certs")
    assert [p.name for p in directory.iterdir()] == [f"{openssl}.0"]


def test_two_cas_of_one_name_get_two_files(tmp_path: Path) -> None:
    a, b = (self_signed((NameOID.COMMON_NAME, "twin")) for _ in range(2))
    directory = storage_auth.write_ca_dir(pem(a, b), tmp_path)
    assert sorted(p.suffix for p in directory.iterdir()) == [".0", ".1"]


def test_a_job_writes_the_ca_directory_from_its_environment(tmp_path: Path) -> None:
    cert = self_signed((NameOID.COMMON_NAME, "remote-jobqueue facility CA"))
    environ = {storage_auth.CA_VARIABLE: storage_auth.ca_to_environment(pem(cert))}
    assert "\n" not in environ[storage_auth.CA_VARIABLE]
    assert storage_auth.use_storage_ca(tmp_path / "ca", environ)
    written = Path(environ["X509_CERT_DIR"]) / f"{storage_auth.subject_hash(cert)}.0"
    assert x509.load_pem_x509_certificate(written.read_bytes()) == cert
    assert not storage_auth.use_storage_ca(tmp_path / "none", {})


def token(tmp_path: Path, **claims) -> dict[str, str]:
    """An environment whose BEARER_TOKEN_FILE holds a token with ``claims``."""
    now = int(time.time())
    body = {"iss": "https://issuer.test", "sub": "alice-sub", "iat": now, "exp": now + 600,
            "aud": WLCG_ANY_AUDIENCE, "scope": "storage.read:/ compute.create"}  # fmt: skip
    body.update(claims)
    value = jwt.encode(body, "secret", algorithm="HS256")
    write_private_file(tmp_path / "bt", value)
    return {"BEARER_TOKEN_FILE": str(tmp_path / "bt"), "_token": value}


URL = "root://cache:1095//root://origin:1094//store/f.root"
SAID = "[FATAL] Auth failed: No protocols left to try"


def explain(environ: dict[str, str], **kwargs) -> str:
    token_value = environ.pop("_token", None)
    message = storage_auth.explain_refusal(URL, SAID, environ, tmp_dir="/nonexistent", **kwargs)
    assert token_value is None or token_value not in message
    assert storage_auth.is_refusal(SAID)
    return message


def test_a_refusal_without_any_token_says_to_log_in(tmp_path: Path) -> None:
    message = explain({})
    assert "no bearer token was found" in message and "remote-jobqueue login" in message
    assert URL in message


def test_a_refusal_of_an_expired_token_says_when_it_expired(tmp_path: Path) -> None:
    message = explain(token(tmp_path, exp=int(time.time()) - 90))
    assert "expired" in message and str(tmp_path / "bt") in message
    assert "log in again" in message


def test_a_refusal_of_a_token_without_storage_read_names_its_scopes(tmp_path: Path) -> None:
    message = explain(token(tmp_path, scope="compute.create"))
    assert "no storage.read scope" in message and "compute.create" in message


def test_a_refusal_of_a_token_for_another_audience_names_both(tmp_path: Path) -> None:
    message = explain(token(tmp_path, aud="remote-jobqueue-pool"), audience="the-storage")
    assert "remote-jobqueue-pool" in message and "the-storage" in message


def test_a_refusal_of_a_token_that_looks_right_points_at_the_issuer(tmp_path: Path) -> None:
    message = explain(token(tmp_path), audience="the-storage")
    assert "https://issuer.test" in message and "trust" in message


def test_the_explanation_drops_a_urls_query(tmp_path: Path) -> None:
    message = storage_auth.explain_refusal(URL + "?authz=secret", SAID, {}, tmp_dir="/nonexistent")
    assert "secret" not in message


def test_a_refused_read_raises_the_explanation_and_keeps_the_servers_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = token(tmp_path, exp=int(time.time()) - 5)
    monkeypatch.delenv("BEARER_TOKEN", raising=False)  # it would come first in discovery
    for name, value in environ.items():
        if not name.startswith("_"):
            monkeypatch.setenv(name, value)
    refused = pytest.raises(storage_auth.StorageAccessDenied, match="expired")
    with refused as caught, storage_auth.refusals_explained(URL):
        raise OSError(f"XRootD error: {SAID}")
    assert isinstance(caught.value.__cause__, OSError)
    assert SAID in str(caught.value)


def test_other_read_errors_pass_unchanged() -> None:
    missing = FileNotFoundError("[ERROR] Server responded with an error: [3011] No such file")
    with (
        pytest.raises(OSError, match="No such file") as caught,
        storage_auth.refusals_explained(URL),
    ):
        raise missing
    assert not isinstance(caught.value, storage_auth.StorageAccessDenied)


def test_a_token_in_the_clients_message_is_not_repeated(tmp_path: Path) -> None:
    """uproot quotes the whole URL it failed to open, query and all."""
    said = f"{SAID} in file {URL}?authz=the-token-itself&x=1"
    message = storage_auth.explain_refusal(URL, said, {}, tmp_dir="/nonexistent")
    assert "the-token-itself" not in message and "authz=<hidden>&x=1" in message
