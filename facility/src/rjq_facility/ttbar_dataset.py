"""NanoAOD-like ttbar and W+jets samples, for the second example analysis (`analysis/ttbar.py`).

The Analysis Grand Challenge's selection reads electrons, muons and jets with the branches of
`../shared/FACTS.md` (``Electron_{pt,eta,phi,mass,cutBased,sip3d}``,
``Muon_{pt,eta,phi,mass,tightId,sip3d,pfRelIso04_all}``, ``Jet_{pt,eta,phi,mass,btagCSVV2,jetId}``),
an access pattern unlike the dimuon's six muon branches. The samples are generated, not
downloaded, with fixed seeds:

- ``TTToSemiLeptonic``: a top pair with one W to a lepton and neutrino, one to two quarks; the
  hadronic top's three jets make the trijet mass peak near 172.5 GeV; b jets mostly pass the
  b tag (CSVv2 > 0.5), light jets rarely;
- ``WJetsToLNu``: a leptonic W and a falling number of light jets (few pass four jets, fewer
  two b tags).

Both have extra soft, non-prompt leptons (failing isolation or impact parameter) and extra
jets, so the selection has work to do. Each sample's files go under ``/store/mc/<sample>/``
at the origin, with a manifest of their own beside the dimuon dataset's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import dataset
from .dataset import CHUNK, _collection, _sizes_match, events_per_file

GENERATOR_VERSION = 1
MANIFEST = ".dataset-ttbar.json"
SEED = 20261203
#: Sample → (events, files).
SAMPLES: dict[str, tuple[int, int]] = {"TTToSemiLeptonic": (120_000, 2), "WJetsToLNu": (60_000, 1)}
TOP_MASS, W_MASS, B_MASS = 172.5, 80.4, 4.8
ELECTRON_MASS, MUON_MASS = 0.000511, 0.1056584


def sample_dir(sample: str) -> str:
    """The directory (an LFN) of a sample's files; the analysis looks there too."""
    return f"/store/mc/{sample}/NANOAOD"


def sample_lfns(sample: str) -> list[str]:
    return [f"{sample_dir(sample)}/nano_{i:03d}.root" for i in range(SAMPLES[sample][1])]


def read_manifest(data_root: Path) -> dict[str, Any] | None:
    return dataset.read_manifest(data_root, MANIFEST)


def generate(data_root: Path) -> list[Path]:
    """Write both samples under ``data_root`` unless they are there already (idempotent)."""
    spec = {"version": GENERATOR_VERSION, "seed": SEED, "samples": SAMPLES}
    lfns = [lfn for sample in SAMPLES for lfn in sample_lfns(sample)]
    paths = [data_root / lfn.lstrip("/") for lfn in lfns]
    old = read_manifest(data_root)
    same_spec = old is not None and old.get("spec") == json.loads(json.dumps(spec))
    if same_spec and _sizes_match(paths, old):
        return paths
    (data_root / MANIFEST).unlink(missing_ok=True)
    entries = []
    for number, sample in enumerate(SAMPLES):
        events, files = SAMPLES[sample]
        first = 0
        for index, count in enumerate(events_per_file(events, files)):
            lfn = sample_lfns(sample)[index]
            path = data_root / lfn.lstrip("/")
            _write(path, np.random.default_rng([SEED, number, index]), sample, first, count)
            entries.append(
                {"lfn": lfn, "sample": sample, "events": count, "size": path.stat().st_size}
            )
            first += count
    tmp = data_root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"spec": spec, "files": entries}, indent=1))
    os.replace(tmp, data_root / MANIFEST)
    return paths


def _write(path: Path, rng: np.random.Generator, sample: str, first: int, count: int) -> None:
    make = _ttbar if sample == "TTToSemiLeptonic" else _wjets
    starts = range(0, count, CHUNK)
    dataset.write_events(
        path, (_as_branches(make(rng, min(CHUNK, count - s)), first + s) for s in starts)
    )


# Kinematics ------------------------------------------------------------------------------------


def _produced(rng: np.random.Generator, n: int, mass: np.ndarray, pt_scale: float) -> np.ndarray:
    """Four-momenta (E, px, py, pz) of ``n`` particles of ``mass`` with a falling pt."""
    pt = rng.gamma(2.0, pt_scale, n)
    y = rng.normal(0.0, 1.2, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    mt = np.hypot(mass, pt)
    return np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)])


def _decay(
    rng: np.random.Generator, parent: np.ndarray, m1: float, m2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic two-body decay of ``parent`` (4, n) in its rest frame, boosted to the lab."""
    n = parent.shape[1]
    m = np.sqrt(np.maximum(parent[0] ** 2 - np.sum(parent[1:] ** 2, axis=0), 0.0))
    p_star = np.sqrt(np.maximum((m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2), 0)) / (2 * m)
    cos_t = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    direction = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])
    beta = parent[1:] / parent[0]
    beta2 = np.sum(beta**2, axis=0)
    gamma = 1 / np.sqrt(1 - beta2)
    factor = np.divide(gamma - 1, beta2, out=np.zeros(n), where=beta2 > 0)
    out = []
    for sign, mass in ((1.0, m1), (-1.0, m2)):
        p = sign * p_star * direction
        e = np.sqrt(p_star**2 + mass**2)
        bp = np.sum(beta * p, axis=0)
        out.append(np.vstack([gamma * (e + bp), p + (factor * bp + gamma * e) * beta]))
    return out[0], out[1]


def _pt_eta_phi(p4: np.ndarray) -> dict[str, np.ndarray]:
    px, py, pz = p4[1], p4[2], p4[3]
    pt = np.hypot(px, py)
    return {"pt": pt, "eta": np.arcsinh(pz / np.maximum(pt, 1e-9)), "phi": np.arctan2(py, px)}


def _jets(
    rng: np.random.Generator, event: np.ndarray, p4: np.ndarray, is_b: np.ndarray
) -> dict[str, np.ndarray]:
    """Jets from partons: 10 % pt resolution, a CSVv2 score by flavour, mostly tight ids."""
    jets = _pt_eta_phi(p4)
    jets["pt"] = jets["pt"] * rng.normal(1.0, 0.1, len(event)).clip(0.5)
    jets["mass"] = jets["pt"] * rng.uniform(0.05, 0.15, len(event))
    jets["btagCSVV2"] = np.where(
        is_b, rng.beta(5.0, 1.2, len(event)), rng.beta(1.0, 7.0, len(event))
    )
    jets["jetId"] = np.where(rng.random(len(event)) < 0.97, 6, 2).astype(np.int32)
    jets["event"] = event
    return jets


def _extra_jets(
    rng: np.random.Generator, n: int, mean: float, slope: float
) -> dict[str, np.ndarray]:
    counts = rng.poisson(mean, n)
    total = int(counts.sum())
    return {
        "event": np.repeat(np.arange(n), counts),
        "pt": 25.0 + rng.exponential(slope, total),
        "eta": rng.uniform(-4.7, 4.7, total),
        "phi": rng.uniform(-np.pi, np.pi, total),
        "mass": rng.uniform(2.0, 12.0, total),
        "btagCSVV2": rng.beta(1.0, 7.0, total),
        "jetId": np.where(rng.random(total) < 0.97, 6, 2).astype(np.int32),
    }


def _leptons(
    rng: np.random.Generator, n: int, prompt: dict[str, np.ndarray], is_muon: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The W's lepton (prompt, isolated) and soft non-prompt ones, split into e and mu."""
    soft_counts = rng.poisson(0.4, n)
    total = int(soft_counts.sum())
    soft = {
        "event": np.repeat(np.arange(n), soft_counts),
        "pt": 5.0 + rng.exponential(10.0, total),
        "eta": rng.uniform(-2.5, 2.5, total),
        "phi": rng.uniform(-np.pi, np.pi, total),
        "sip3d": 2.0 + rng.exponential(4.0, total),
        "iso": rng.exponential(0.4, total),
        "muon": rng.random(total) < 0.5,
        "good_id": rng.random(total) < 0.5,
        "charge": rng.choice(np.array([-1, 1], dtype=np.int32), total),
    }
    prompt = {
        **prompt,
        "sip3d": rng.exponential(1.0, n),
        "iso": rng.exponential(0.03, n),
        "muon": is_muon,
        "good_id": rng.random(n) < 0.95,
        "charge": rng.choice(np.array([-1, 1], dtype=np.int32), n),
    }
    both = {k: np.concatenate([prompt[k], soft[k]]) for k in soft}
    split = []
    for want_muon in (False, True):
        sel = both["muon"] == want_muon
        objects = {k: v[sel] for k, v in both.items() if k not in ("muon", "good_id", "iso")}
        good = both["good_id"][sel]
        if want_muon:
            objects["mass"] = np.full(int(sel.sum()), MUON_MASS)
            objects["tightId"] = good
            objects["pfRelIso04_all"] = both["iso"][sel]
        else:
            objects["mass"] = np.full(int(sel.sum()), ELECTRON_MASS)
            # cutBased: 0 fail ... 4 tight; a non-isolated electron fails the tight id.
            tight = good & (both["iso"][sel] < 0.15)
            objects["cutBased"] = np.where(tight, 4, rng.integers(0, 4, int(sel.sum()))).astype(
                np.int32
            )
        split.append(_collection(objects, None, n))
    return split[0], split[1]


def _ttbar(rng: np.random.Generator, n: int) -> dict[str, dict[str, np.ndarray]]:
    event = np.arange(n)
    hadronic = _produced(rng, n, TOP_MASS + rng.normal(0, 1.4, n), 60.0)
    leptonic = _produced(rng, n, TOP_MASS + rng.normal(0, 1.4, n), 60.0)
    w_had, b_had = _decay(rng, hadronic, W_MASS, B_MASS)
    w_lep, b_lep = _decay(rng, leptonic, W_MASS, B_MASS)
    q1, q2 = _decay(rng, w_had, 0.3, 0.3)
    is_muon = rng.random(n) < 0.5
    lepton, _neutrino = _decay(rng, w_lep, MUON_MASS, 0.0)
    partons = np.concatenate([b_had, b_lep, q1, q2], axis=1)
    flavour_b = np.concatenate([np.ones(2 * n, bool), np.zeros(2 * n, bool)])
    jets = _jets(rng, np.tile(event, 4), partons, flavour_b)
    extra = _extra_jets(rng, n, 0.8, 25.0)
    electrons, muons = _leptons(rng, n, {"event": event, **_pt_eta_phi(lepton)}, is_muon)
    return {"Electron": electrons, "Muon": muons, "Jet": _merged_jets(jets, extra, n)}


def _wjets(rng: np.random.Generator, n: int) -> dict[str, dict[str, np.ndarray]]:
    event = np.arange(n)
    w = _produced(rng, n, W_MASS + rng.normal(0, 2.0, n), 25.0)
    lepton, _neutrino = _decay(rng, w, MUON_MASS, 0.0)
    is_muon = rng.random(n) < 0.5
    jets = _extra_jets(rng, n, 2.2, 35.0)
    jets["eta"] = rng.uniform(-2.8, 2.8, len(jets["eta"]))
    heavy = rng.random(len(jets["pt"])) < 0.05  # W + heavy flavour
    jets["btagCSVV2"] = np.where(heavy, rng.beta(5.0, 1.2, len(heavy)), jets["btagCSVV2"])
    electrons, muons = _leptons(rng, n, {"event": event, **_pt_eta_phi(lepton)}, is_muon)
    return {"Electron": electrons, "Muon": muons, "Jet": _collection(jets, None, n)}


def _merged_jets(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], n: int
) -> dict[str, np.ndarray]:
    keep = np.abs(a["eta"]) < 4.7
    merged = {k: np.concatenate([a[k][keep], b[k]]) for k in b}
    return _collection(merged, None, n)


def _as_branches(collections: dict[str, dict[str, np.ndarray]], first: int) -> dict[str, Any]:
    import awkward as ak

    n = len(collections["Jet"]["counts"])
    number = np.arange(first, first + n, dtype=np.uint64)
    out: dict[str, Any] = {
        "run": ak.Array(np.ones(n, dtype=np.uint32)),
        "luminosityBlock": ak.Array((number // 1000 + 1).astype(np.uint32)),
        "event": ak.Array(number + 1),
    }
    for name, objects in collections.items():
        counts = objects["counts"]
        fields = {k: v for k, v in objects.items() if k != "counts"}
        out[name] = ak.zip({k: ak.unflatten(v, counts) for k, v in fields.items()})
    return out
