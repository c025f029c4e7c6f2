"""`remote-jobqueue configure`: a facility's public settings become a user's client settings.

Specification: the Dask part goes where Dask looks by default and the HTCondor client part
beside the user's other remote-jobqueue files, submitting with the bearer token; the bindings
are pointed there only when nothing else names a configuration; a document without sites or a
collector, or with a setting the schema refuses, is refused before anything is written.
"""

from __future__ import annotations

import pytest
import yaml

from remote_jobqueue import configure
from remote_jobqueue.errors import RemoteJobqueueError

DOC = {
    "remote-jobqueue": {
        "sites": {"T2_A": {"schedd": "s", "requirements": 'TARGET.SiteName == "T2_A"'}},
        "issuer": "https://iam.example.org",
    },
    "htcondor": {"collector": "cm.example.org:9618", "ca": "-----BEGIN CERTIFICATE-----\n"},
}


def _source(tmp_path, doc) -> str:
    path = tmp_path / "facility.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_settings_go_where_dask_and_the_bindings_find_them(tmp_path):
    home = tmp_path / "home"
    written = configure.write(configure.load(_source(tmp_path, DOC)), home)
    dask_file = home / ".config" / "dask" / "remote-jobqueue.yaml"
    assert dask_file in written
    assert yaml.safe_load(dask_file.read_text()) == {"remote-jobqueue": DOC["remote-jobqueue"]}
    condor = (home / ".config" / "remote-jobqueue" / "condor_config").read_text()
    assert "COLLECTOR_HOST = cm.example.org:9618" in condor
    assert "SEC_CLIENT_AUTHENTICATION_METHODS = SCITOKENS" in condor
    assert f"AUTH_SSL_CLIENT_CAFILE = {home / '.config/remote-jobqueue/pool-ca.pem'}" in condor

    environ = {"HOME": str(home)}
    configure.apply_defaults(environ)
    assert environ["CONDOR_CONFIG"] == str(home / ".config" / "remote-jobqueue" / "condor_config")
    chosen = {"HOME": str(home), "CONDOR_CONFIG": "/etc/elsewhere"}
    configure.apply_defaults(chosen)
    assert chosen["CONDOR_CONFIG"] == "/etc/elsewhere", "a configuration the user named wins"


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"remote-jobqueue": {"issuer": "x"}}, "names no sites"),
        ({**DOC, "htcondor": {}}, "names no collector"),
        (
            {**DOC, "remote-jobqueue": {**DOC["remote-jobqueue"], "lease": -1}},
            "lease",
        ),
    ],
)
def test_a_document_that_cannot_serve_is_refused_before_anything_is_written(
    tmp_path, broken, message
):
    with pytest.raises(RemoteJobqueueError, match=message):
        configure.load(_source(tmp_path, broken))
    assert not (tmp_path / "home").exists()


def test_an_unreadable_source_says_where_it_looked(tmp_path):
    with pytest.raises(RemoteJobqueueError, match="cannot read the facility's settings"):
        configure.load(str(tmp_path / "missing.yaml"))
