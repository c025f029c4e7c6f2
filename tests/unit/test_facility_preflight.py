"""`facility up` says what is missing before it starts anything.

Specification: not being root, and a port held by another program, each give a
`FacilityError` that names the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import socket

import pytest

from rjq_facility import lifecycle
from rjq_facility.config import FacilityConfig


def test_not_root_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 1000)
    with pytest.raises(lifecycle.FacilityError, match="needs root"):
        lifecycle.preflight(FacilityConfig())


def test_a_taken_port_is_named_with_what_needs_it():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        cfg = dataclasses.replace(FacilityConfig(), issuer_port=port)
        with pytest.raises(lifecycle.FacilityError, match=f"{port} \\(OIDC issuer\\)"):
            lifecycle.check_ports_free(cfg, "127.0.0.1")


def test_unknown_user_has_no_client_settings():
    with pytest.raises(lifecycle.FacilityError, match="unknown user"):
        lifecycle.env(FacilityConfig(), "mallory")
