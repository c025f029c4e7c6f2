"""The schedd's SciTokens setup: literal mapfile keys, a seeded key cache, a CA-signed cert."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import replace

from cryptography import x509

from rjq_facility import scitokens
from rjq_facility.config import FacilityConfig


def test_mapfile_maps_issuer_and_subject_literally_to_the_pool_identity():
    subjects = {"alice": "sub-a", "bob": "sub-b"}
    text = scitokens.mapfile("http://10.0.0.1:18443", subjects, "rjq.test")
    assert text.splitlines() == [
        "SCITOKENS http://10.0.0.1:18443,sub-a alice@rjq.test",
        "SCITOKENS http://10.0.0.1:18443,sub-b bob@rjq.test",
    ]


def test_schedd_reads_literal_keys_and_accepts_scitokens():
    conf = scitokens.schedd_config(FacilityConfig())
    assert "CERTIFICATE_MAPFILE_ASSUME_HASH_KEYS = true" in conf
    assert "SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS, SCITOKENS" in conf


def test_key_cache_holds_the_issuers_keys_far_into_the_future(tmp_path):
    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}
    path = scitokens.seed_key_cache(tmp_path, "http://iss", jwks, os.getuid(), os.getgid())
    assert path == tmp_path / "scitokens" / "scitokens_cpp.sqllite"
    with sqlite3.connect(path) as db:
        (keys,) = db.execute(
            "SELECT keys FROM keycache WHERE issuer = ?", ("http://iss",)
        ).fetchone()
    entry = json.loads(keys)
    assert entry["jwks"] == jwks
    assert entry["expires"] > time.time() + 10 * 365 * 86400
    assert entry["next_update"] > time.time() + 10 * 365 * 86400


def test_schedd_certificate_is_signed_by_the_facility_ca_for_the_pools_htcondor_alias(tmp_path):
    cfg = replace(FacilityConfig(), state_dir=tmp_path)
    cert_path, key_path = scitokens.make_certificates(cfg, os.getuid(), os.getgid())
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(scitokens.ca_file(cfg).read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10-213-77-2.rjq.test" in names.get_values_for_type(x509.DNSName)
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    # Made once: a restart keeps the CA clients already trust.
    again, _ = scitokens.make_certificates(cfg, os.getuid(), os.getgid())
    assert again.read_bytes() == cert_path.read_bytes()
