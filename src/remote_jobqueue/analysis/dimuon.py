"""The dimuon histogram: opposite-charge muon pairs, invariant mass, fixed binning.

Selection: events with exactly two muons of opposite charge. The mass is the full four-vector
formula in double precision, and bins are found as ROOT's ``TAxis::FindFixBin`` does, so the
numpy kernel here and the C++ kernel RDataFrame JIT-compiles give bit-identical contents
(under- and overflow included), not merely close ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TREE = "Events"
BINS, LOW, HIGH = 150, 0.0, 150.0
BRANCHES = ("nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge")
TITLE = "Opposite-charge dimuon mass"
XLABEL = "m(μμ) [GeV]"

#: The selection, as an RDataFrame filter expression.
CPP_SELECTION = "nMuon == 2 && Muon_charge[0] != Muon_charge[1]"

#: The mass, as an RDataFrame ``Define`` body (a body with ``return`` is accepted as is).
CPP_MASS = """
double px = 0, py = 0, pz = 0, e = 0;
for (int i = 0; i < 2; ++i) {
    const double pt = Muon_pt[i], eta = Muon_eta[i], phi = Muon_phi[i], m = Muon_mass[i];
    const double p_z = pt * std::sinh(eta);
    px += pt * std::cos(phi);
    py += pt * std::sin(phi);
    pz += p_z;
    e += std::sqrt(pt * pt + p_z * p_z + m * m);
}
return std::sqrt(std::max(e * e - px * px - py * py - pz * pz, 0.0));
"""


def mass(arrays) -> np.ndarray:
    """Dimuon masses of the selected events in ``arrays`` (awkward, with :data:`BRANCHES`)."""
    import awkward as ak

    selected = arrays[arrays["nMuon"] == 2]
    charge = selected["Muon_charge"]
    selected = selected[charge[:, 0] != charge[:, 1]]
    px = py = pz = e = 0.0
    for i in range(2):
        pt, eta, phi, m = (
            ak.to_numpy(selected[name][:, i]).astype(np.float64)
            for name in ("Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass")
        )
        p_z = pt * np.sinh(eta)
        px = px + pt * np.cos(phi)
        py = py + pt * np.sin(phi)
        pz = pz + p_z
        e = e + np.sqrt(pt * pt + p_z * p_z + m * m)
    return np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))


def fill(values: np.ndarray) -> np.ndarray:
    """Counts per bin, ``[underflow, bin 1 … bin BINS, overflow]``, binned as ROOT bins.

    ``TAxis::FindFixBin``: ``1 + int(nbins * (x - low) / (high - low))``, with ``x < low`` the
    underflow and ``x >= high`` the overflow; same operations, same order, same doubles.
    """
    values = np.asarray(values, dtype=np.float64)
    index = np.empty(len(values), dtype=np.int64)
    under, over = values < LOW, values >= HIGH
    inside = ~(under | over)
    index[under], index[over] = 0, BINS + 1
    index[inside] = 1 + (BINS * (values[inside] - LOW) / (HIGH - LOW)).astype(np.int64)
    return np.bincount(index, minlength=BINS + 2).astype(np.int64)


def empty() -> np.ndarray:
    return np.zeros(BINS + 2, dtype=np.int64)


@dataclass
class Result:
    """What a run of the analysis gives: the counts, how many events it read, and how fast."""

    engine: str
    counts: np.ndarray = field(default_factory=empty)
    events: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        selected = int(self.counts.sum())
        return (
            f"{self.engine}: {self.events:,} events processed in {self.seconds:.2f} s "
            f"({self.events_per_second:,.0f} events/s); {selected:,} dimuon candidates"
        )

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "events": self.events,
            "seconds": self.seconds,
            "events_per_second": self.events_per_second,
            "counts": [int(c) for c in self.counts],
        }


def timed(engine: str, run: Callable[[], tuple[np.ndarray, int]]) -> Result:
    """Run ``run`` (returning counts and events) and time it as a :class:`Result`."""
    start = time.perf_counter()
    counts, events = run()
    seconds = time.perf_counter() - start
    return Result(engine, np.asarray(counts, dtype=np.int64), int(events), seconds)


def plot(counts: np.ndarray, path: str | Path, label: str = "") -> Path:
    """Save the histogram (in-range bins) as a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(LOW, HIGH, BINS + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.stairs(np.asarray(counts)[1:-1], edges, label=label or None)
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(f"events / {(HIGH - LOW) / BINS:g} GeV")
    ax.set_title(TITLE)
    if label:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def total(parts: Iterable[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """Sum partial ``(counts, events)`` results."""
    counts, events = empty(), 0
    for part_counts, part_events in parts:
        counts += np.asarray(part_counts, dtype=np.int64)
        events += int(part_events)
    return counts, events
