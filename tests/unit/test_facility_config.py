"""The facility's generated configuration says what the pool needs, and nothing leaks out.

Specification:
- every daemon shares fast matchmaking, IDTOKENS security, and the chroot workarounds;
- remote sites are reached through CCB and advertise their SiteName; the hub runs the
  central manager and the schedd;
- user client settings authenticate with IDTOKENS only;
- the root file system's cache key changes when, and only when, its recipe changes;
- the host's Debian mirror is found in either apt source format.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from rjq_facility import condor, network, rootfs
from rjq_facility.config import FacilityConfig


def test_common_config_has_fast_matchmaking_and_chroot_workarounds():
    text = condor.common_config(FacilityConfig())
    for line in (
        "NEGOTIATOR_INTERVAL = 2",
        "SCHEDD_INTERVAL = 2",
        "MOUNT_UNDER_SCRATCH =",
        "USE_PID_NAMESPACES = false",
        "SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS",
        "LOCAL_CONFIG_DIR =",
    ):
        assert line in text.splitlines()


def test_remote_sites_use_ccb_and_advertise_their_name():
    cfg = FacilityConfig()
    text = condor.role_config(cfg, cfg.site("T2_A"))
    assert "CCB_ADDRESS = $(COLLECTOR_HOST)" in text
    assert 'SiteName = "T2_A"' in text
    assert "use ROLE: Execute" in text
    assert "CentralManager" not in text and "Submit" not in text


def test_the_hub_runs_the_central_manager_the_schedd_and_the_local_site():
    cfg = FacilityConfig()
    text = condor.role_config(cfg, cfg.site("T2_LOCAL"))
    assert "use ROLE: CentralManager" in text and "use ROLE: Submit" in text
    assert 'SiteName = "T2_LOCAL"' in text
    assert "CCB_ADDRESS" not in text


def test_client_settings_authenticate_with_idtokens_only():
    cfg = FacilityConfig()
    text = condor.client_config(cfg, "alice")
    assert "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS" in text
    assert str(cfg.user_dir("alice") / "tokens.d") in text


def test_rootfs_key_follows_the_recipe_only():
    cfg = FacilityConfig()
    assert rootfs.cache_key(cfg) == rootfs.cache_key(dataclasses.replace(cfg, issuer_port=1))
    assert rootfs.cache_key(cfg) != rootfs.cache_key(dataclasses.replace(cfg, users=("carol",)))
    assert rootfs.cache_key(cfg) != rootfs.cache_key(dataclasses.replace(cfg, suite="forky"))


def test_site_firewall_drops_new_inbound_connections():
    assert "policy drop" in network.SITE_FIREWALL
    assert "ct state established,related accept" in network.SITE_FIREWALL


def test_unknown_site_names_the_known_ones():
    import pytest

    with pytest.raises(KeyError, match="T2_A"):
        FacilityConfig().site("T2_NOWHERE")


@given(st.from_regex(r"[a-z]{3,10}\.[a-z]{2,5}", fullmatch=True))
def test_mirror_is_read_from_deb822_and_one_line_sources(tmp_path_factory, host):
    d = tmp_path_factory.mktemp("apt")
    (d / "sources.list.d").mkdir()
    (d / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: https://packages.example/node\nSuites: x\n"
    )
    (d / "sources.list.d" / "debian.sources").write_text(
        f"Types: deb\nURIs: http://{host}/debian/\nSuites: bookworm\n"
    )
    assert rootfs.host_debian_mirror(d) == f"http://{host}/debian"
    (d / "sources.list").write_text(f"deb [arch=amd64] http://{host}/debian bookworm main\n")
    assert rootfs.host_debian_mirror(d) == f"http://{host}/debian"
