"""A NanoAOD-like test dataset: Drell-Yan Z→μμ events over a soft background.

The facility's XRootD origin serves it, the tests and the example analysis read it. It is made
here, not downloaded, so it is deterministic (fixed seeds), small enough to make in seconds, and
physically plausible enough that a dimuon mass histogram shows the Z peak near 91 GeV.

Files are written under ``data_root`` at their logical file names (``/store/...``), which is
what ``oss.localroot`` of the origin expects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

#: Bump when the generator changes what it writes, so old files are regenerated.
GENERATOR_VERSION = 1
DATASET_DIR = "/store/mc/DYJetsToMuMu/NANOAOD"
MANIFEST = ".dataset.json"
SEED = 20240917
Z_FRACTION = 0.4
Z_MASS, Z_WIDTH = 91.1876, 2.4952
MUON_MASS = 0.1056584
#: Events per ``extend`` call: one TBasket per branch each, NanoAOD-like sizes.
CHUNK = 100_000


def dataset_lfns(files: int = 4) -> list[str]:
    """Logical file names (``/store/...``) of a dataset split into ``files`` files."""
    return [f"{DATASET_DIR}/nano_{i:03d}.root" for i in range(files)]


DATASET_LFNS: tuple[str, ...] = tuple(dataset_lfns())


def events_per_file(events: int, files: int) -> list[int]:
    """Split ``events`` over ``files`` as evenly as possible (the first files take the rest)."""
    base, rest = divmod(events, files)
    return [base + (i < rest) for i in range(files)]


def read_manifest(data_root: Path, name: str = MANIFEST) -> dict[str, Any] | None:
    """What the last :func:`generate` (or another generator, by its manifest's ``name``) wrote
    into ``data_root`` (``None`` if nothing)."""
    try:
        return json.loads((data_root / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def generate(data_root: Path, *, events: int = 1_000_000, files: int = 4) -> list[Path]:
    """Write the dataset under ``data_root`` unless the same one is already there.

    Idempotent: a manifest records the spec and the file sizes, so an unchanged dataset is never
    rewritten (the caches never revalidate, so rewriting would only invite stale reads).
    """
    if events < files or files < 1:
        raise ValueError(f"need at least one event per file, got {events=} {files=}")
    spec = {"version": GENERATOR_VERSION, "seed": SEED, "events": events, "files": files}
    lfns = dataset_lfns(files)
    paths = [data_root / lfn.lstrip("/") for lfn in lfns]
    old = read_manifest(data_root)
    if old is not None and old.get("spec") == spec and _sizes_match(paths, old):
        return paths

    (data_root / MANIFEST).unlink(missing_ok=True)
    first = 0
    entries = []
    for index, (path, count) in enumerate(zip(paths, events_per_file(events, files), strict=True)):
        _write_file(path, np.random.default_rng([SEED, index]), first, count)
        entries.append({"lfn": lfns[index], "events": count, "size": path.stat().st_size})
        first += count
    manifest = {"spec": spec, "files": entries}
    tmp = data_root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, data_root / MANIFEST)
    return paths


def _sizes_match(paths: list[Path], manifest: dict[str, Any]) -> bool:
    sizes = [entry.get("size") for entry in manifest.get("files", [])]
    try:
        return sizes == [p.stat().st_size for p in paths]
    except FileNotFoundError:
        return False


def _write_file(path: Path, rng: np.random.Generator, first: int, count: int) -> None:
    starts = range(0, count, CHUNK)
    write_events(path, (_events(rng, first + s, min(CHUNK, count - s)) for s in starts))


def write_events(path: Path, chunks: Iterable[dict[str, Any]]) -> None:
    """A TTree ``Events`` of ``chunks`` (one basket per branch each), written atomically."""
    import uproot

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with uproot.recreate(tmp) as out:
        tree = None
        for chunk in chunks:
            if tree is None:
                tree = out.mktree("Events", {k: v.type for k, v in chunk.items()})
            tree.extend(chunk)
    os.replace(tmp, path)


def _events(rng: np.random.Generator, first: int, n: int) -> dict[str, Any]:
    """One chunk of events, as the branch groups uproot's ``mktree`` turns into NanoAOD names."""
    import awkward as ak

    number = np.arange(first, first + n, dtype=np.uint64)
    is_z = rng.random(n) < Z_FRACTION
    muons = _concat(_z_muons(rng, np.flatnonzero(is_z)), _soft(rng, n, 0.25, 4.0, 3.0, 2.4))
    keep = (muons["pt"] > 3.0) & (np.abs(muons["eta"]) < 2.4)
    muon = _collection(muons, keep, n)
    muon["mass"] = np.full(len(muon["pt"]), MUON_MASS, dtype=np.float32)
    electron = _collection(_soft(rng, n, 0.4, 12.0, 5.0, 2.5), None, n)
    jet = _collection(_soft(rng, n, 2.5, 30.0, 20.0, 4.7), None, n)
    met_pt = rng.rayleigh(18.0, n).astype(np.float32)
    met_phi = rng.uniform(-np.pi, np.pi, n).astype(np.float32)

    def record(objects: dict[str, np.ndarray], fields: tuple[str, ...]) -> ak.Array:
        return ak.zip({f: ak.unflatten(objects[f], objects["counts"]) for f in fields})

    return {
        "run": ak.Array(np.ones(n, dtype=np.uint32)),
        "luminosityBlock": ak.Array((number // 1000 + 1).astype(np.uint32)),
        "event": ak.Array(number + 1),
        "Muon": record(muon, ("pt", "eta", "phi", "mass", "charge")),
        "Electron": record(electron, ("pt", "eta")),
        "Jet": record(jet, ("pt", "eta")),
        "MET_pt": ak.Array(met_pt),
        "MET_phi": ak.Array(met_phi),
    }


def _z_muons(rng: np.random.Generator, events: np.ndarray) -> dict[str, np.ndarray]:
    """Two opposite-sign muons per Z: Breit-Wigner mass, isotropic decay, boosted to the lab."""
    n = len(events)
    lo, hi = np.arctan(2 * (np.array([60.0, 120.0]) - Z_MASS) / Z_WIDTH)
    mass = Z_MASS + Z_WIDTH / 2 * np.tan(rng.uniform(lo, hi, n))
    z_pt = rng.gamma(1.5, 7.0, n)
    z_y = rng.normal(0.0, 1.6, n)
    z_phi = rng.uniform(-np.pi, np.pi, n)
    mt = np.hypot(mass, z_pt)
    z_p = np.stack([z_pt * np.cos(z_phi), z_pt * np.sin(z_phi), mt * np.sinh(z_y)])
    z_e = mt * np.cosh(z_y)

    # Decay in the rest frame, then boost both muons by beta = p/E.
    p_star = np.sqrt(mass**2 / 4 - MUON_MASS**2)
    cos_t = rng.uniform(-1.0, 1.0, n)
    phi_s = rng.uniform(-np.pi, np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    direction = np.stack([sin_t * np.cos(phi_s), sin_t * np.sin(phi_s), cos_t])
    beta = z_p / z_e
    beta2 = np.sum(beta**2, axis=0)
    gamma = 1 / np.sqrt(1 - beta2)
    factor = np.divide(gamma - 1, beta2, out=np.zeros(n), where=beta2 > 0)
    legs = []
    for sign in (1.0, -1.0):
        p = sign * p_star * direction
        bp = np.sum(beta * p, axis=0)
        lab = p + (factor * bp + gamma * mass / 2) * beta
        legs.append(lab)
    px, py, pz = (np.concatenate([a[i] for a in legs]) for i in range(3))
    pt = np.hypot(px, py) * rng.normal(1.0, 0.015, 2 * n)  # ~1.5 % momentum resolution
    charge = np.concatenate([np.ones(n), -np.ones(n)]).astype(np.int32)
    flip = np.tile(rng.random(n) < 0.5, 2)  # which leg is the mu+ is random
    return {
        "event": np.concatenate([events, events]),
        "pt": pt,
        "eta": np.arcsinh(pz / np.hypot(px, py)),
        "phi": np.arctan2(py, px),
        "charge": np.where(flip, -charge, charge),
    }


def _soft(
    rng: np.random.Generator, n: int, mean: float, slope: float, threshold: float, eta_max: float
) -> dict[str, np.ndarray]:
    """Poisson-many objects per event with a falling (exponential) pt spectrum."""
    counts = rng.poisson(mean, n)
    total = int(counts.sum())
    return {
        "event": np.repeat(np.arange(n), counts),
        "pt": threshold + rng.exponential(slope, total),
        "eta": rng.uniform(-eta_max, eta_max, total),
        "phi": rng.uniform(-np.pi, np.pi, total),
        "charge": rng.choice(np.array([-1, 1], dtype=np.int32), total),
    }


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _collection(
    objects: dict[str, np.ndarray], keep: np.ndarray | None, n: int
) -> dict[str, np.ndarray]:
    """Group flat objects by event, leading pt first (as NanoAOD orders them), as float32."""
    if keep is not None:
        objects = {k: v[keep] for k, v in objects.items()}
    order = np.lexsort((-objects["pt"], objects["event"]))
    out = {
        k: (v[order].astype(np.float32) if v.dtype.kind == "f" else v[order])
        for k, v in objects.items()
        if k != "event"
    }
    out["counts"] = np.bincount(objects["event"], minlength=n)
    return out
