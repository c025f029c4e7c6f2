"""The shared dimuon histogram definition: selection, mass formula, and ROOT-like binning."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from remote_jobqueue.analysis import dimuon


def muons(*events: list[tuple[float, float, float, int]]) -> ak.Array:
    """Events as lists of (pt, eta, phi, charge) muons, in NanoAOD branch layout."""

    def column(index: int, dtype) -> ak.Array:
        return ak.values_astype(ak.Array([[m[index] for m in e] for e in events]), dtype)

    return ak.zip(
        {
            "nMuon": ak.Array([len(e) for e in events]),
            "Muon_pt": column(0, np.float32),
            "Muon_eta": column(1, np.float32),
            "Muon_phi": column(2, np.float32),
            "Muon_mass": ak.values_astype(column(0, np.float32) * 0, np.float32),
            "Muon_charge": column(3, np.int32),
        },
        depth_limit=1,
    )


def test_only_events_with_exactly_two_opposite_charge_muons_are_selected():
    events = muons(
        [(45.0, 0.0, 0.0, 1), (45.0, 0.0, np.pi, -1)],  # selected: back to back, m = 90
        [(45.0, 0.0, 0.0, 1), (45.0, 0.0, np.pi, 1)],  # same charge
        [(45.0, 0.0, 0.0, 1)],  # one muon
        [(45.0, 0.0, 0.0, 1), (45.0, 0.0, np.pi, -1), (5.0, 1.0, 1.0, 1)],  # three
    )
    assert dimuon.mass(events) == pytest.approx([90.0], rel=1e-6)


def test_a_back_to_back_pair_has_the_mass_of_its_energy():
    # Opposite momenta: the pair is at rest, so m = E1 + E2 = 2 pt cosh(eta) (massless muons).
    events = muons([(30.0, 0.5, 0.0, -1), (30.0, -0.5, np.pi, 1)])
    assert dimuon.mass(events)[0] == pytest.approx(2 * 30.0 * np.cosh(0.5), rel=1e-6)


def test_binning_follows_root_fixed_bins_with_under_and_overflow():
    step = (dimuon.HIGH - dimuon.LOW) / dimuon.BINS
    values = np.array([dimuon.LOW - 1e-9, dimuon.LOW, dimuon.LOW + step, dimuon.HIGH - 1e-9])
    values = np.append(values, [dimuon.HIGH, 1e9])
    counts = dimuon.fill(values)
    assert len(counts) == dimuon.BINS + 2
    assert counts[0] == 1  # underflow
    assert counts[1] == 1 and counts[2] == 1  # a lower edge belongs to its bin
    assert counts[dimuon.BINS] == 1
    assert counts[dimuon.BINS + 1] == 2  # the upper edge is overflow, as in ROOT
    assert counts.sum() == len(values)


def test_partial_results_add_up():
    counts, events = dimuon.total([(dimuon.fill([10.0]), 5), (dimuon.fill([10.5, 200.0]), 7)])
    assert events == 12
    assert counts[11] == 2 and counts[-1] == 1 and counts.sum() == 3
