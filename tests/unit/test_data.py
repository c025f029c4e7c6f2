"""Client data access settings and the generated NanoAOD-like dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from hypothesis import given
from hypothesis import strategies as st

from remote_jobqueue.data import (
    cache_environment,
    to_url,
    write_proxy_plugin_conf,
)
from rjq_facility import dataset

BRANCHES = {
    "run",
    "luminosityBlock",
    "event",
    "nMuon",
    "Muon_pt",
    "Muon_eta",
    "Muon_phi",
    "Muon_mass",
    "Muon_charge",
    "nElectron",
    "Electron_pt",
    "Electron_eta",
    "nJet",
    "Jet_pt",
    "Jet_eta",
    "MET_pt",
    "MET_phi",
}


# Proxy plugin and environment --------------------------------------------------------------


def test_plugin_conf_enables_the_unversioned_proxy_plugin(tmp_path: Path) -> None:
    conf_dir = write_proxy_plugin_conf(tmp_path / "plugins")
    assert conf_dir == tmp_path / "plugins"
    (conf,) = conf_dir.glob("*.conf")
    settings = dict(
        (part.strip() for part in line.split("=", 1)) for line in conf.read_text().splitlines()
    )
    assert settings == {
        "url": "root://*;xroot://*",
        "lib": "libXrdClProxyPlugin.so",
        "enable": "true",
    }


@pytest.mark.parametrize(
    "cache",
    [
        "root://10.1.2.3:11095",
        "root://10.1.2.3:11095/",
        "root://10.1.2.3:11095//",
        "10.1.2.3:11095",
    ],
)
def test_cache_environment(tmp_path: Path, cache: str) -> None:
    env = cache_environment(cache, tmp_path)
    assert env["XRD_PLUGINCONFDIR"] == str(tmp_path)
    assert env["XROOT_PROXY"] == "root://10.1.2.3:11095//"
    assert "XRD_PLUGIN" not in env  # would capture file:// too
    assert all(isinstance(v, str) for v in env.values())
    # A dead server must fail within seconds, not the client's default ten minutes.
    assert int(env["XRD_CONNECTIONRETRY"]) * int(env["XRD_CONNECTIONWINDOW"]) <= 30
    assert 0 < int(env["XRD_REQUESTTIMEOUT"]) <= 300


@pytest.mark.parametrize(
    "chain",
    [
        "root://10.1.2.3:11095//root://10.1.9.4:11095",
        "root://10.1.2.3:11095//root://10.1.9.4:11095//",
        "root://10.1.2.3:11095/root://10.1.9.4:11095/",
    ],
)
def test_a_cache_hierarchy_is_one_proxy_prefix_nearest_first(tmp_path: Path, chain: str) -> None:
    env = cache_environment(chain, tmp_path)
    assert env["XROOT_PROXY"] == "root://10.1.2.3:11095//root://10.1.9.4:11095//"


def test_a_hierarchy_keeps_each_hops_scheme(tmp_path: Path) -> None:
    env = cache_environment("roots://site:1095//root://regional:1095", tmp_path)
    assert env["XROOT_PROXY"] == "roots://site:1095//root://regional:1095//"


def test_probe_of_a_dead_server_fails_fast_with_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRD_", "XROOT_"))}
    env |= {"XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "1"}
    url = "root://127.0.0.1:1//store/none.root"
    proc = subprocess.run(
        [sys.executable, "-m", "remote_jobqueue.data", "probe", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["url"] == url
    assert "OSError" in result["error"]


# to_url -------------------------------------------------------------------------------------

segment = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="_-.+"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in {".", ".."})
lfns = st.lists(segment, min_size=1, max_size=6).map(lambda parts: "/store/" + "/".join(parts))
origins = st.sampled_from(
    ["root://origin.example:1094", "root://origin.example:1094/", "origin.example:1094"]
)


@given(lfn=lfns, origin=origins)
def test_to_url_puts_lfns_at_the_origin(lfn: str, origin: str) -> None:
    url = to_url(lfn, origin)
    assert url == f"root://origin.example:1094/{lfn}"
    assert url.split("1094/", 1)[1] == lfn  # the LFN survives intact
    assert to_url(url, "elsewhere:1") == url  # URLs are left alone


@given(lfn=lfns)
def test_to_url_leaves_urls_alone(lfn: str) -> None:
    for url in (f"root://cache:1095/{lfn}", f"xroot://h//{lfn}", f"file://{lfn}"):
        assert to_url(url, "origin:1094") == url


@pytest.mark.parametrize("bad", ["store/x.root", "", "x.root"])
def test_to_url_rejects_relative_names(bad: str) -> None:
    with pytest.raises(ValueError, match="not a URL nor an absolute logical file name"):
        to_url(bad, "origin:1094")


# Dataset ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return dataset.generate(tmp_path_factory.mktemp("data"), events=30_000, files=3)


def test_dataset_files_are_at_their_lfns(small: list[Path]) -> None:
    root = small[0].parents[4]  # <root>/store/mc/DYJetsToMuMu/NANOAOD/nano_000.root
    assert [str(p.relative_to(root)) for p in small] == [
        lfn.lstrip("/") for lfn in dataset.dataset_lfns(3)
    ]
    assert tuple(dataset.dataset_lfns(4)) == dataset.DATASET_LFNS
    assert all(lfn.startswith("/store/") for lfn in dataset.DATASET_LFNS)


def test_dataset_is_a_nanoaod_like_ttree(small: list[Path]) -> None:
    counts = []
    for path in small:
        with uproot.open(path) as f:
            tree = f["Events"]
            assert isinstance(tree, uproot.TTree)  # not an RNTuple
            assert set(tree.keys()) == BRANCHES
            a = tree.arrays()
            for obj in ("Muon", "Electron", "Jet"):
                assert ak.all(a[f"n{obj}"] == ak.num(a[f"{obj}_pt"]))
            assert ak.all(ak.num(a.Muon_charge) == a.nMuon)
            assert ak.all(abs(ak.flatten(a.Muon_charge)) == 1)
            counts.append(len(a))
    assert counts == [10_000, 10_000, 10_000]
    # Event numbers are unique across files.
    events = np.concatenate([uproot.open(p)["Events"]["event"].array(library="np") for p in small])
    assert len(np.unique(events)) == len(events)


def test_dataset_has_a_z_peak(small: list[Path]) -> None:
    with uproot.open(small[0]) as f:
        a = f["Events"].arrays(filter_name="Muon_*")
    two = a[ak.num(a.Muon_pt) >= 2]
    mu = {k: ak.to_numpy(two[f"Muon_{k}"][:, :2]).astype(np.float64) for k in ("pt", "eta", "phi")}
    opposite = ak.to_numpy(two.Muon_charge[:, 0] * two.Muon_charge[:, 1]) < 0
    px, py = mu["pt"] * np.cos(mu["phi"]), mu["pt"] * np.sin(mu["phi"])
    pz = mu["pt"] * np.sinh(mu["eta"])
    e = np.sqrt(px**2 + py**2 + pz**2)
    mass = np.sqrt(np.maximum(e.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2, 0))
    mass = mass[opposite]
    in_peak = np.count_nonzero(np.abs(mass - 91.2) < 5)
    assert in_peak > 0.5 * len(mass)
    assert abs(np.median(mass[np.abs(mass - 91.2) < 10]) - 91.2) < 1


def test_dataset_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    one = dataset.generate(tmp_path / "a", events=4_000, files=2)
    two = dataset.generate(tmp_path / "b", events=4_000, files=2)
    for p, q in zip(one, two, strict=True):
        x, y = uproot.open(p)["Events"].arrays(), uproot.open(q)["Events"].arrays()
        assert ak.array_equal(x, y)

    stamps = [p.stat().st_mtime_ns for p in one]
    assert dataset.generate(tmp_path / "a", events=4_000, files=2) == one
    assert [p.stat().st_mtime_ns for p in one] == stamps  # unchanged spec: not rewritten

    dataset.generate(tmp_path / "a", events=6_000, files=2)  # changed spec: rewritten
    assert uproot.open(one[0])["Events"].num_entries == 3_000
    manifest = dataset.read_manifest(tmp_path / "a")
    assert manifest is not None
    assert [f["events"] for f in manifest["files"]] == [3_000, 3_000]
