"""One schema of settings: `remote-jobqueue-schema.yaml`, beside the defaults.

Specification: the shipped defaults are valid and the schema names every one of them;
impossible values and unknown keys are refused with a message that names the key, its value
(or its site) and what is allowed, whether they come from keyword arguments or Dask config; a
good site catalogue is accepted as it is; the spawner's settings are the schema's keys.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import dask.config
import jsonschema
import pytest

from remote_jobqueue import InvalidSettings, RemoteHTCondorCluster, config, sites
from remote_jobqueue.spawner.environment import ServerSettings, dask_environment

GOOD_SITE = {
    "collector": "10.0.0.1:9618",
    "schedd": "hub@test",
    "requirements": 'TARGET.SiteName == "T2_A"',
    "cache": "root://10.0.0.1:11095",
    "gateway": "10.0.0.1:2222",
    "gateway-host-key": "ssh-ed25519 AAAAC3Nza key",
    "image": "docker://example/worker:1",
    "label": "HTCondor-T2_A",
}


# The schema and the defaults ---------------------------------------------------------------


def test_the_schema_is_a_json_schema_and_names_every_default():
    jsonschema.validators.validator_for(config.schema).check_schema(config.schema)
    assert config.setting_keys() == list(config.defaults["remote-jobqueue"])


def test_every_setting_says_what_it_is():
    assert all(config.describe(key) for key in config.setting_keys())


def test_the_shipped_defaults_are_valid():
    assert config.check(config.defaults["remote-jobqueue"]) == config.defaults["remote-jobqueue"]


def test_settings_hold_every_key_of_the_schema():
    assert set(config.settings()) == set(config.setting_keys())


# Values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"processes": 0}, "remote-jobqueue.processes = 0 is refused: must be at least 1"),
        ({"cores": 0}, "remote-jobqueue.cores = 0 is refused: must be at least 1"),
        ({"lease": -5}, "remote-jobqueue.lease = -5 is refused: must be greater than 0"),
        ({"memory": "plenty"}, "remote-jobqueue.memory = 'plenty' is refused: must be a size"),
        ({"disk": "0 B"}, "remote-jobqueue.disk = '0 B' is refused: must be a size"),
        ({"cores": "2"}, "remote-jobqueue.cores = '2' is refused: must be an integer"),
        ({"tls": "yes"}, "remote-jobqueue.tls = 'yes' is refused: must be true or false"),
        ({"gateway": ""}, "remote-jobqueue.gateway = '' is refused: must not be empty"),
    ],
)
def test_impossible_values_are_refused_naming_the_key_and_value(overrides, message):
    with pytest.raises(InvalidSettings) as err:
        config.settings(overrides)
    assert str(err.value).startswith(message)
    assert isinstance(err.value, ValueError)


def test_an_impossible_value_from_dask_config_is_refused_too():
    with (
        dask.config.set({"remote-jobqueue.processes": 0}),
        pytest.raises(InvalidSettings, match=r"remote-jobqueue\.processes = 0"),
    ):
        config.settings()


def test_keyword_overrides_win_unless_none_with_underscores_or_hyphens():
    with dask.config.set({"remote-jobqueue.cores": 3, "remote-jobqueue.lease": 60}):
        got = config.settings({"cores": None, "gateway_host_key": "ssh-ed25519 K", "lease": 30})
    assert got["cores"] == 3
    assert got["gateway-host-key"] == "ssh-ed25519 K"
    assert got["lease"] == 30


def test_a_dask_config_key_with_underscores_is_the_hyphenated_setting(monkeypatch):
    # As Dask keeps it when DASK_REMOTE_JOBQUEUE__GATEWAY_HOST_KEY is set before the import.
    section = dict(dask.config.get("remote-jobqueue"))
    section["gateway_host_key"] = section.pop("gateway-host-key") or "ssh-ed25519 K"
    monkeypatch.setitem(dask.config.config, "remote-jobqueue", section)
    assert config.settings()["gateway-host-key"] == "ssh-ed25519 K"
    assert config.settings({"gateway-host-key": "X"})["gateway-host-key"] == "X"


def test_paths_and_tuples_are_taken_as_the_cluster_takes_them():
    got = config.settings({"token_file": Path("/t/bt"), "worker_extra_args": ("--lifetime", "1h")})
    assert got["token-file"] == "/t/bt"
    assert got["worker-extra-args"] == ["--lifetime", "1h"]


def test_an_unknown_setting_is_refused_with_a_suggestion():
    with pytest.raises(InvalidSettings) as err:
        config.settings({"corse": 2})
    assert "unknown setting 'corse' (remote-jobqueue.corse)" in str(err.value)
    assert "did you mean 'cores'?" in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(InvalidSettings) as err:
        config.settings({"cores": 0, "processes": 0})
    assert [p.split(" =")[0] for p in err.value.problems] == [
        "remote-jobqueue.cores",
        "remote-jobqueue.processes",
    ]


# The site catalogue ------------------------------------------------------------------------


def test_an_unknown_site_key_is_refused_naming_the_key_and_the_site():
    catalogue = {"T2_A": {**GOOD_SITE, "colector": "10.0.0.1:9618"}}
    with dask.config.set({"remote-jobqueue.sites": catalogue}):
        with pytest.raises(InvalidSettings) as err:
            sites.catalogue()
        with pytest.raises(InvalidSettings):
            config.settings()
    message = str(err.value)
    assert message.startswith(
        "unknown key 'colector' in site 'T2_A' (remote-jobqueue.sites.T2_A); known keys: cache, "
    )
    assert "did you mean 'collector'?" in message


def test_a_wrong_site_value_names_the_site_and_key():
    with (
        dask.config.set({"remote-jobqueue.sites": {"T2_A": {"cache": 11095}}}),
        pytest.raises(
            InvalidSettings, match=r"remote-jobqueue\.sites\.T2_A\.cache = 11095 is refused"
        ),
    ):
        sites.catalogue()


def test_a_cluster_is_not_made_with_a_bad_catalogue():
    with (
        dask.config.set({"remote-jobqueue.sites": {"T2_A": {"colector": "c"}}}),
        pytest.raises(InvalidSettings, match="'colector' in site 'T2_A'"),
    ):
        RemoteHTCondorCluster(site="local")


def test_a_good_catalogue_is_accepted_as_it_is():
    catalogue = {"T2_A": GOOD_SITE, "T2_B": {"schedd": "s", "gateway_host_key": "K"}, "T2_C": None}
    with dask.config.set({"remote-jobqueue.sites": catalogue}):
        got = sites.catalogue()
    assert got["T2_A"] == sites.SiteSpec(
        "T2_A", **{k.replace("-", "_"): v for k, v in GOOD_SITE.items()}
    )
    assert got["T2_B"].gateway_host_key == "K"  # Dask's "_" for "-"
    assert got["T2_C"] == sites.SiteSpec("T2_C")
    assert got["local"].is_local


def test_a_site_has_a_field_for_every_site_key_of_the_schema():
    # A name, and the candidates of ``random`` (made by the client, never configured).
    fields = {f.name for f in dataclasses.fields(sites.SiteSpec)} - {"name", "candidates"}
    assert fields == {key.replace("-", "_") for key in config.site_keys()}


# The spawner -------------------------------------------------------------------------------


@pytest.fixture
def schema_with_a_new_key(monkeypatch):
    """The schema as it would be with one more setting, ``new-knob``."""
    schema = copy.deepcopy(config.schema)
    schema["properties"]["remote-jobqueue"]["properties"]["new-knob"] = {
        "type": ["string", "null"],
        "description": "A knob added to the schema.",
    }
    monkeypatch.setattr(config, "schema", schema)


def test_the_server_gets_no_setting_the_schema_does_not_know():
    server = ServerSettings(runtime_dir="/run/rjq/alice", dask={"new-knob": "on"})
    with pytest.raises(InvalidSettings, match="unknown setting 'new-knob'"):
        dask_environment(server)


def test_a_setting_added_to_the_schema_reaches_the_server(schema_with_a_new_key):
    server = ServerSettings(runtime_dir="/run/rjq/alice", dask={"new_knob": "on"})
    assert dask_environment(server)["DASK_REMOTE_JOBQUEUE__NEW_KNOB"] == "'on'"


def test_the_server_gets_no_impossible_value():
    server = ServerSettings(runtime_dir="/run/rjq/alice", dask={"lease": 0})
    with pytest.raises(InvalidSettings, match=r"remote-jobqueue\.lease = 0"):
        dask_environment(server)


def test_the_spawners_setting_traits_take_type_and_help_from_the_schema(schema_with_a_new_key):
    from traitlets import Unicode

    from remote_jobqueue.spawner.mixin import SETTING_TRAITS, setting_trait

    trait = setting_trait("new-knob")
    assert isinstance(trait, Unicode) and trait.default_value is None
    assert "A knob added to the schema." in trait.help
    assert set(SETTING_TRAITS) <= set(config.setting_keys())


def test_the_spawner_trait_help_is_the_schema_description():
    pytest.importorskip("jupyterhub")
    from remote_jobqueue.spawner import LocalProcessRemoteSpawner

    traits = LocalProcessRemoteSpawner.class_traits()
    assert config.describe("gateway-host-key") in traits["gateway_host_key"].help
    assert config.describe("sites") in traits["sites"].help


def test_the_spawner_refuses_an_unknown_site_key_when_configured():
    pytest.importorskip("jupyterhub")
    from remote_jobqueue.spawner import LocalProcessRemoteSpawner

    with pytest.raises(InvalidSettings, match="unknown key 'colector' in site 'T2_A'"):
        LocalProcessRemoteSpawner(sites={"T2_A": {"colector": "c"}})
    spawner = LocalProcessRemoteSpawner(sites={"T2_A": GOOD_SITE}, dask_settings={"lease": 60})
    assert spawner.server_dask_settings() == {"lease": 60, "sites": {"T2_A": GOOD_SITE}}
