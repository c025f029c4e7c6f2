"""A site running another Python or Dask than the client is one clear error at start.

Specification: equal Python minor versions and equal dask, distributed, cloudpickle and
msgpack pass (the patch level of Python may differ); any difference is named, both sides'
versions with it, and the message says what to change.
"""

from __future__ import annotations

import copy

import pytest
from distributed.versions import get_versions

from remote_jobqueue.versions import VersionMismatch, check, mismatches

HERE = get_versions()


def test_the_same_software_passes_and_a_python_patch_level_may_differ() -> None:
    site = copy.deepcopy(HERE)
    major, minor, *_ = site["host"]["python"].split(".")
    site["host"]["python"] = f"{major}.{minor}.99.final.0"
    assert mismatches(HERE, site) == []


def test_every_difference_is_named_with_both_versions() -> None:
    site = copy.deepcopy(HERE)
    site["host"]["python"] = "3.13.5.final.0"
    site["packages"]["distributed"] = "2025.3.0"
    site["packages"]["cloudpickle"] = "2.2.1"
    found = mismatches(HERE, site)
    here = ".".join(HERE["host"]["python"].split(".")[:2])
    assert f"Python {here} here, 3.13 at the site" in found
    assert f"distributed {HERE['packages']['distributed']} here, 2025.3.0 at the site" in found
    assert any(line.startswith("cloudpickle ") for line in found)
    assert len(found) == 3


def test_a_mismatch_is_an_error_that_says_what_to_do() -> None:
    site = copy.deepcopy(HERE)
    site["host"]["python"] = "3.13.5.final.0"
    with pytest.raises(
        VersionMismatch,
        match=r"at T2_A runs other software .* Python .*"
        r"choose the site's image or software area",
    ):
        check(HERE, site, "T2_A")
