"""A ttbar selection in the style of the IRIS-HEP Analysis Grand Challenge, as a coffea processor.

Exactly one tight, isolated lepton (pt > 30 GeV, |eta| < 2.1) and at least four jets (pt > 30
GeV, |eta| < 2.4, tight id); b tag: CSVv2 > 0.5. Two regions: ``4j1b`` (exactly one b tag),
where the observable is HT, the scalar sum of the jets' pt; ``4j2b`` (two or more), where it is
the mass of the trijet with the largest pt among those with a b-tagged jet. Systematic
variations: the jet energy scale (jet pt and mass x 1.03 and 0.97, selection redone) and
b-tag weights (x 1.075 and 0.925 per b-tagged jet of the selection).

`run` drives it with coffea's `processor.Runner`: on a Dask ``client`` with the `DaskExecutor`
(any cluster's client: ours, a LocalCluster), or in this one process with the
`IterativeExecutor`, the reference a cluster's result must equal bin for bin.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from coffea import processor

#: The samples the analysis reads (the development facility's origin serves generated ones).
SAMPLES = ("TTToSemiLeptonic", "WJetsToLNu")
REGIONS = ("4j1b", "4j2b")
VARIATIONS = ("nominal", "jes_up", "jes_down", "btag_up", "btag_down")
JES = {"nominal": 1.0, "jes_up": 1.03, "jes_down": 0.97}
BTAG_WEIGHT = {"btag_up": 1.075, "btag_down": 0.925}
B_TAG = 0.5
#: Events per chunk (one task each): a few per file, so a cluster has work to share.
CHUNKSIZE = 20_000

# Generated files carry only the branches the selection reads, not NanoAOD's cross-reference
# indices (Tau_jetIdx …) that coffea's schema would link; it says so for every chunk.
warnings.filterwarnings("ignore", "Missing cross-reference index", RuntimeWarning)


def sample_dir(sample: str) -> str:
    """Where a sample's files are, as a logical file name (the facility's origin has both)."""
    return f"/store/mc/{sample}/NANOAOD"


def new_histogram() -> Any:
    import hist

    return (
        hist.Hist.new.Reg(25, 50, 550, name="observable", label="observable [GeV]")
        .StrCat(list(REGIONS), name="region")
        .StrCat(list(SAMPLES), name="process", growth=True)
        .StrCat(list(VARIATIONS), name="variation")
        .Weight()
    )


class TtbarProcessor(processor.ProcessorABC):
    """One chunk of events → ``{"hist": …, "events": {sample: n}}`` (coffea adds chunks up)."""

    def process(self, events: Any) -> dict[str, Any]:
        import awkward as ak

        sample = events.metadata["dataset"]
        histogram = new_histogram()
        electrons = events.Electron
        muons = events.Muon
        good_e = (
            (electrons.pt > 30)
            & (abs(electrons.eta) < 2.1)
            & (electrons.cutBased == 4)
            & (electrons.sip3d < 4)
        )
        good_mu = (
            (muons.pt > 30)
            & (abs(muons.eta) < 2.1)
            & muons.tightId
            & (muons.sip3d < 4)
            & (muons.pfRelIso04_all < 0.15)
        )
        one_lepton = (ak.sum(good_e, axis=1) + ak.sum(good_mu, axis=1)) == 1
        for variation, scale in JES.items():
            jets = _scaled_jets(events.Jet[one_lepton], scale)
            jets = jets[(jets.pt > 30) & (abs(jets.eta) < 2.4) & (jets.jetId >= 6)]
            four = ak.num(jets) >= 4
            jets = jets[four]
            n_b = ak.sum(jets.btagCSVV2 > B_TAG, axis=1)
            weights = {variation: np.ones(len(jets))}
            if variation == "nominal":
                for name, factor in BTAG_WEIGHT.items():
                    weights[name] = np.asarray(factor ** ak.to_numpy(n_b), dtype=float)
            one_b = ak.to_numpy(n_b == 1)
            ht = ak.to_numpy(ak.sum(jets.pt[one_b], axis=1))
            two_b = ak.to_numpy(n_b >= 2)
            mass = _trijet_mass(jets[two_b])
            for name, weight in weights.items():
                histogram.fill(
                    observable=ht, region="4j1b", process=sample, variation=name,
                    weight=weight[one_b],
                )  # fmt: skip
                histogram.fill(
                    observable=mass, region="4j2b", process=sample, variation=name,
                    weight=weight[two_b],
                )  # fmt: skip
        return {"hist": histogram, "events": {sample: len(events)}}

    def postprocess(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        return accumulator


def _scaled_jets(jets: Any, scale: float) -> Any:
    """Jets as Lorentz vectors with pt and mass scaled (the jet energy scale variation).

    In double precision: NumPy's float32 sin, cos and sinh may differ in the last bit between
    its vectorised and scalar loops (which one runs depends on the array's alignment), and at
    float32's resolution that moves an event across a bin edge now and then between two runs
    of the same chunk. The files hold float32, as NanoAOD does."""
    import awkward as ak
    from coffea.nanoevents.methods import vector

    def double(array: Any) -> Any:
        return ak.values_astype(array, np.float64)

    return ak.zip(
        {
            "pt": double(jets.pt) * scale,
            "eta": double(jets.eta),
            "phi": double(jets.phi),
            "mass": double(jets.mass) * scale,
            "btagCSVV2": jets.btagCSVV2,
            "jetId": jets.jetId,
        },
        with_name="PtEtaPhiMLorentzVector",
        behavior=vector.behavior,
    )


def _trijet_mass(jets: Any) -> np.ndarray:
    """Per event, the mass of the highest-pt trijet that has a b-tagged jet."""
    import awkward as ak

    trijets = ak.combinations(jets, 3, fields=["j1", "j2", "j3"])
    p4 = trijets.j1 + trijets.j2 + trijets.j3
    tagged = (
        np.maximum(np.maximum(trijets.j1.btagCSVV2, trijets.j2.btagCSVV2), trijets.j3.btagCSVV2)
        > B_TAG
    )
    p4 = p4[tagged]
    best = ak.argmax(p4.pt, axis=1, keepdims=True)
    return ak.to_numpy(ak.flatten(p4[best].mass))


@dataclass
class Result:
    histogram: Any
    events: dict[str, int]
    seconds: float
    engine: str

    def summary(self) -> str:
        total = sum(self.events.values())
        rate = total / self.seconds if self.seconds else float("nan")
        return (
            f"{self.engine}: {total} events processed ({', '.join(self._per_sample())}) in "
            f"{self.seconds:.1f} s, {rate:,.0f} events/s"
        )

    def _per_sample(self) -> list[str]:
        return [f"{sample} {self.events[sample]}" for sample in sorted(self.events)]

    def to_dict(self) -> dict[str, Any]:
        """Plain data: events per sample and the histogram's values and variances as lists
        (observable, region, process, variation), with the axes' categories."""
        h = self.histogram
        return {
            "engine": self.engine,
            "events": dict(sorted(self.events.items())),
            "seconds": self.seconds,
            "processes": list(h.axes["process"]),
            "variations": list(h.axes["variation"]),
            "values": h.values().tolist(),
            "variances": h.variances().tolist(),
        }

    def selected(self, region: str, variation: str = "nominal") -> dict[str, float]:
        """Weighted events in ``region`` per process."""
        h = self.histogram
        return {p: float(h[:, region, p, variation].sum().value) for p in h.axes["process"]}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Where two results (`Result.to_dict`) differ, bin for bin; empty if they agree.

    Unweighted variations must agree exactly (they count events). The b-tag variations sum
    float weights, whose order of addition depends on how chunks were combined (a tree on a
    cluster, a line in one process), so they agree to 1e-12 relative.
    """
    found = []
    if a["events"] != b["events"]:
        found.append(f"events: {a['events']} != {b['events']}")
    if (a["processes"], a["variations"]) != (b["processes"], b["variations"]):
        return [*found, "the histograms' categories differ"]
    for key in ("values", "variances"):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        for v, variation in enumerate(a["variations"]):
            xv, yv = x[..., v], y[..., v]
            same = (
                np.allclose(xv, yv, rtol=1e-12, atol=0)
                if variation in BTAG_WEIGHT
                else np.array_equal(xv, yv)
            )
            if not same:
                worst = float(np.max(np.abs(xv - yv)))
                found.append(f"{key} of {variation} differ (by {worst:g} at most)")
    return found


def fileset(urls: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """coffea's fileset: sample → its files, each with its tree."""
    return {sample: {"files": {url: "Events" for url in files}} for sample, files in urls.items()}


def run(urls: dict[str, list[str]], client: Any = None, chunksize: int = CHUNKSIZE) -> Result:
    """The selection over ``urls`` (sample → file URLs): on ``client``'s cluster, or here."""
    from coffea.nanoevents import NanoAODSchema

    if client is None:
        executor, engine = processor.IterativeExecutor(status=False), "coffea, one process"
    else:
        executor, engine = processor.DaskExecutor(client=client, status=False), "coffea on Dask"
    runner = processor.Runner(executor=executor, schema=NanoAODSchema, chunksize=chunksize)
    start = time.perf_counter()
    out = runner(fileset(urls), processor_instance=TtbarProcessor(), treename="Events")
    return Result(out["hist"], dict(out["events"]), time.perf_counter() - start, engine)


def plot(result: Result, path: Path) -> Path:
    """Both regions' nominal distributions, stacked by process, into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result.histogram
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, region, label in zip(axes, REGIONS, ("HT [GeV]", "trijet mass [GeV]"), strict=True):
        edges = h.axes["observable"].edges
        bottom = np.zeros(len(edges) - 1)
        for process in h.axes["process"]:
            values = h[:, region, process, "nominal"].values()
            ax.stairs(values + bottom, edges, baseline=bottom, fill=True, label=process)
            bottom = bottom + values
        ax.set_xlabel(label)
        ax.set_title(region)
        ax.legend()
    fig.suptitle(result.engine)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
