"""The facility's generated configuration says what the pool needs, and nothing leaks out.

Specification:
- every daemon shares fast matchmaking, IDTOKENS security, and the container workarounds;
- remote sites are reached through CCB and advertise their SiteName; the hub runs the
  central manager and the schedd;
- user client settings authenticate with IDTOKENS only;
- a remote site's node is on its own network behind its router, sees the software area
  read-only, and the hub's pool container is on the hub network;
- an image's tag changes when, and only when, what goes into it changes;
- the host's Debian mirror is found in either apt source format.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rjq_facility import condor, images
from rjq_facility.config import FacilityConfig


def test_common_config_has_fast_matchmaking_and_container_workarounds():
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


def test_an_image_tag_follows_its_base_and_its_files_only(tmp_path):
    (tmp_path / "docker" / "condor").mkdir(parents=True)
    (tmp_path / "docker" / "condor" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "src").mkdir()
    tag = images.image_tag("condor", "base:1", tmp_path)
    assert tag == images.image_tag("condor", "base:1", tmp_path)
    assert tag != images.image_tag("condor", "base:2", tmp_path)
    (tmp_path / "src" / "module.py").write_text("x = 1\n")  # not in the condor image
    assert tag == images.image_tag("condor", "base:1", tmp_path)
    (tmp_path / "docker" / "condor" / "entrypoint.sh").write_text("#!/bin/sh\n")
    assert tag != images.image_tag("condor", "base:1", tmp_path)


def test_a_product_images_tag_follows_the_sources_but_not_their_bytecode(tmp_path):
    (tmp_path / "docker" / "gateway").mkdir(parents=True)
    (tmp_path / "docker" / "gateway" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "src" / "__pycache__").mkdir(parents=True)
    tag = images.image_tag("gateway", "base:1", tmp_path)
    (tmp_path / "src" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    assert tag == images.image_tag("gateway", "base:1", tmp_path)
    (tmp_path / "src" / "m.py").write_text("x = 1\n")
    assert tag != images.image_tag("gateway", "base:1", tmp_path)


def test_a_remote_sites_node_is_on_its_network_behind_its_router(tmp_path):
    cfg = FacilityConfig()
    site = cfg.site("T2_A")
    argv = condor.run_argv(cfg, "img", site, [tmp_path])
    assert f"--network={site.network}:ip={site.address}" in argv
    assert f"--env=RJQ_ROUTER={site.router}" in argv
    assert f"--volume={tmp_path}:{tmp_path}:ro" in argv
    assert not any(cfg.hub_network in arg for arg in argv)
    # No DNS server answers at a site: lookups must fail at once, not after 2 x 5 s.
    assert "--dns=127.0.0.1" in argv


def test_the_pool_container_is_on_the_hub_network():
    cfg = FacilityConfig()
    argv = condor.run_argv(cfg, "img", cfg.site("T2_LOCAL"), [])
    assert f"--network={cfg.hub_network}:ip={cfg.pool_address}" in argv
    assert not any("RJQ_ROUTER" in arg for arg in argv)


def test_the_host_forwards_the_hub_networks_packets_only_to_the_facilitys_networks():
    from rjq_facility import network

    cfg = FacilityConfig()
    rules = network.egress_rules(cfg)
    own = [cfg.hub_subnet, cfg.outside_subnet, *(s.subnet for s in cfg.sites if s.subnet)]
    assert f"ip saddr {cfg.hub_subnet} ip daddr != {{ {', '.join(own)} }} drop" in rules
    assert "hook forward" in rules


def test_the_outside_machine_reaches_the_hub_network_and_nothing_else():
    from rjq_facility import network

    cfg = FacilityConfig()
    rules = network.egress_rules(cfg)
    assert f"ip saddr {cfg.outside_subnet} ip daddr != {cfg.hub_subnet} drop" in rules


def test_every_network_of_the_facility_is_private_and_its_own():
    import ipaddress

    cfg = FacilityConfig()
    nets = [ipaddress.ip_network(cfg.hub_subnet)]
    nets += [ipaddress.ip_network(s.subnet) for s in cfg.sites if s.private]
    nets += [ipaddress.ip_network(cfg.outside_subnet)]
    assert all(net.is_private for net in nets)
    assert len({str(n) for n in nets}) == len(nets)
    for site in cfg.sites:
        if site.private:
            assert ipaddress.ip_address(site.router) in ipaddress.ip_network(site.subnet)
            assert ipaddress.ip_address(cfg.router_hub_address(site)) in nets[0]


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
    assert images.host_debian_mirror(d) == f"http://{host}/debian"
    (d / "sources.list").write_text(f"deb [arch=amd64] http://{host}/debian bookworm main\n")
    assert images.host_debian_mirror(d) == f"http://{host}/debian"
