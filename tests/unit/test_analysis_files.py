"""Dataset files as origin URLs: the notebook names files, the environment picks the cache."""

from __future__ import annotations

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
