"""Dataset files as origin URLs: the notebook names files, the environment picks the cache.

The origin and the dataset's directory come from the caller or the environment
(``RJQ_XROOTD_ORIGIN``, ``RJQ_DATASET_DIR``), which `facility env` sets for the facility's.
"""

from __future__ import annotations

import dataclasses

import pytest

from remote_jobqueue.analysis import files


def test_logical_file_names_become_urls_at_the_origin(monkeypatch):
    monkeypatch.setenv("RJQ_XROOTD_ORIGIN", "root://origin.example:1094")
    names = ["/store/a/1.root", "/store/a/2.root", "/store/a/3.root"]
    assert files.urls(names, limit=2) == [
        "root://origin.example:1094//store/a/1.root",
        "root://origin.example:1094//store/a/2.root",
    ]
    assert files.urls(["/store/b.root"], at="root://other:1") == ["root://other:1//store/b.root"]


def test_without_an_origin_the_error_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("RJQ_XROOTD_ORIGIN", raising=False)
    with pytest.raises(LookupError, match="RJQ_XROOTD_ORIGIN"):
        files.urls(["/store/a.root"])


def test_the_dataset_directory_is_given_or_taken_from_the_environment(monkeypatch):
    monkeypatch.setenv("RJQ_DATASET_DIR", "/store/mc/X")
    assert files.dataset_dir() == "/store/mc/X"
    assert files.dataset_dir("/store/data/Y") == "/store/data/Y"
    monkeypatch.delenv("RJQ_DATASET_DIR")
    with pytest.raises(LookupError, match="RJQ_DATASET_DIR"):
        files.urls(at="root://origin.example:1094")


def test_the_facility_names_its_dataset_for_clients(monkeypatch, tmp_path):
    """`facility env` sets what `files.urls()` lists: the product does not know the facility."""
    from rjq_facility import dataset, issuer, lifecycle
    from rjq_facility.config import FacilityConfig

    monkeypatch.setattr(issuer, "password_grant", lambda *a, **k: {"access_token": "x.y.z"})
    env = lifecycle.env(dataclasses.replace(FacilityConfig(), state_dir=tmp_path), "alice")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert files.dataset_dir() == dataset.DATASET_DIR
    assert all(lfn.startswith(f"{dataset.DATASET_DIR}/") for lfn in dataset.DATASET_LFNS)
