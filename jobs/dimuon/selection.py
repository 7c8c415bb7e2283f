"""Di-muon selections for the four input layouts, array-at-a-time: each returns the pair masses, the
kinematics of the selected muons and the cut-flow counts. Semantics: shared/reference/dimuon.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import awkward as ak
import numpy as np

from jobs.core import physics

SCHEMA_BRANCHES: dict[str, list[str]] = {
    "nanoaod": ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"],
    "aod": [
        "Muon_pt",
        "Muon_eta",
        "Muon_phi",
        "Muon_charge",
        "Muon_isGlobal",
        "Muon_sumChargedHadronPt",
        "Muon_sumNeutralHadronEt",
        "Muon_sumPhotonEt",
        "Muon_sumPUPt",
    ],
    "pairs": ["E1", "px1", "py1", "pz1", "Q1", "E2", "px2", "py2", "pz2", "Q2"],
    "p4": ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Muon_Charge"],
}
CUTS: dict[str, list[str]] = {
    "nanoaod": ["events", "exactly_two_muons", "opposite_charge"],
    "p4": ["events", "exactly_two_muons", "opposite_charge"],
    "pairs": ["events", "opposite_charge"],
    "aod": ["events", "two_selected_muons", "leading_muon_tight", "opposite_charge"],
}

# AOD-style selection B (CMS Big Data Reduction)
AOD_MUON_PT, AOD_MUON_ETA, AOD_MUON_ISO = 10.0, 2.4, 0.5
AOD_LEAD_PT, AOD_LEAD_ETA, AOD_LEAD_ISO = 25.0, 2.1, 0.12


@dataclass
class Selected:
    """Per-pair masses, the (pt, eta, phi) of every selected muon, and counts after each cut."""

    mass: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    counts: list[int]


def _list_parts(jagged: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, content) of a list array, without a copy where it is already offsets + numbers (as
    uproot reads a jagged branch; its int32 offsets stay int32)."""
    layout = ak.to_layout(jagged)
    if not isinstance(layout, ak.contents.ListOffsetArray):
        layout = layout.to_ListOffsetArray64(True)
    return np.asarray(layout.offsets), ak.to_numpy(layout.content)


def _entry_pair(jagged: ak.Array, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second entry (float64) of the given events, each known to hold at least two: two
    numpy takes at the list starts instead of an awkward filter of the whole record."""
    offsets, content = _list_parts(jagged)
    first = offsets[events]
    return content[first].astype(np.float64), content[first + 1].astype(np.float64)


def _exactly_two_opposite(a: ak.Array, counts: np.ndarray, fields: Sequence[str], charge: str):
    """Events with exactly two entries, then of opposite charge: (n_two, n_os, [(first, second) per
    field])."""
    two = np.flatnonzero(counts == 2)
    q1, q2 = _entry_pair(a[charge], two)
    os_ = two[q1 != q2]
    return len(two), len(os_), [_entry_pair(a[f], os_) for f in fields]


def select_nanoaod(a: ak.Array) -> Selected:
    """Exactly two muons (nMuon), opposite charge; mass of the sum of the (pt, eta, phi, m) four-vectors."""
    n = ak.to_numpy(a["nMuon"])
    if not np.array_equal(n, ak.to_numpy(ak.num(a["Muon_pt"]))):
        raise ValueError("nMuon disagrees with the length of the Muon_* arrays")
    fields = [f"Muon_{x}" for x in ("pt", "eta", "phi", "mass")]
    n_two, n_os, (pt, eta, phi, m) = _exactly_two_opposite(a, n, fields, "Muon_charge")
    mass = physics.blockwise(
        physics.pair_mass_ptetaphim, pt[0], eta[0], phi[0], m[0], pt[1], eta[1], phi[1], m[1]
    )
    return Selected(mass, *map(np.concatenate, (pt, eta, phi)), [len(n), n_two, n_os])


def select_p4(a: ak.Array) -> Selected:
    """Exactly two muons, opposite charge; mass of the summed (E, px, py, pz)."""
    n = ak.to_numpy(ak.num(a["Muon_E"]))
    fields = [f"Muon_{x}" for x in ("E", "Px", "Py", "Pz")]
    n_two, n_os, (e, px, py, pz) = _exactly_two_opposite(a, n, fields, "Muon_Charge")
    mass = physics.invariant_mass(e[0] + e[1], px[0] + px[1], py[0] + py[1], pz[0] + pz[1])
    pt, eta, phi = physics.pt_eta_phi(*map(np.concatenate, (px, py, pz)))
    return Selected(mass, pt, eta, phi, [len(n), n_two, n_os])


def select_pairs(a: ak.Array) -> Selected:
    """One stored pair per event (the Zmumu layout): opposite charge; mass of the summed (E, p)."""
    col = {k: ak.to_numpy(a[k]) for k in SCHEMA_BRANCHES["pairs"]}
    os_ = col["Q1"] != col["Q2"]
    e = (col["E1"] + col["E2"])[os_]
    px, py, pz = ((col[f"{c}1"] + col[f"{c}2"])[os_] for c in ("px", "py", "pz"))
    mass = physics.invariant_mass(e, px, py, pz)
    p = [physics.pt_eta_phi(col[f"px{i}"][os_], col[f"py{i}"][os_], col[f"pz{i}"][os_]) for i in (1, 2)]
    pt, eta, phi = (np.stack([p[0][k], p[1][k]], axis=1).ravel() for k in range(3))
    return Selected(mass, pt, eta, phi, [len(os_), int(os_.sum())])


def relative_isolation(a: ak.Array) -> ak.Array:
    """(sumChargedHadronPt + max(0, sumNeutralHadronEt + sumPhotonEt - 0.5 sumPUPt)) / pt, cone 0.4."""
    neutral = a["Muon_sumNeutralHadronEt"] + a["Muon_sumPhotonEt"] - 0.5 * a["Muon_sumPUPt"]
    return (a["Muon_sumChargedHadronPt"] + np.maximum(neutral, 0.0)) / a["Muon_pt"]


def select_aod(a: ak.Array) -> Selected:
    """Selection B: good muons (pt > 10, |eta| < 2.4, rel-iso < 0.5, global), >= 2 of them sorted by pt;
    the leading one tight (pt > 25, |eta| < 2.1, rel-iso < 0.12); the two leading of opposite sign;
    mll = sqrt(2 pt1 pt2 (cosh d_eta - cos d_phi))."""
    iso = relative_isolation(a)
    good = (
        (a["Muon_pt"] > AOD_MUON_PT)
        & (abs(a["Muon_eta"]) < AOD_MUON_ETA)
        & (iso < AOD_MUON_ISO)
        & (a["Muon_isGlobal"] != 0)
    )
    mu = ak.zip(
        {"pt": a["Muon_pt"], "eta": a["Muon_eta"], "phi": a["Muon_phi"], "q": a["Muon_charge"], "iso": iso}
    )[good]
    mu = mu[ak.argsort(mu["pt"], axis=1, ascending=False)]
    two = mu[ak.num(mu) >= 2]
    lead, sub = two[:, 0], two[:, 1]
    tight = (lead["pt"] > AOD_LEAD_PT) & (abs(lead["eta"]) < AOD_LEAD_ETA) & (lead["iso"] < AOD_LEAD_ISO)
    os_ = tight & (lead["q"] != sub["q"])
    l1, l2 = lead[os_], sub[os_]
    f = lambda x: ak.to_numpy(x).astype(np.float64)  # noqa: E731 - local shorthand
    mass = physics.massless_pair_mass(
        f(l1["pt"]), f(l1["eta"]), f(l1["phi"]), f(l2["pt"]), f(l2["eta"]), f(l2["phi"])
    )
    pt, eta, phi = (np.stack([f(l1[k]), f(l2[k])], axis=1).ravel() for k in ("pt", "eta", "phi"))
    return Selected(mass, pt, eta, phi, [len(a), len(two), int(ak.sum(tight)), int(ak.sum(os_))])


SELECTIONS: dict[str, Callable[[ak.Array], Selected]] = {
    "nanoaod": select_nanoaod,
    "aod": select_aod,
    "pairs": select_pairs,
    "p4": select_p4,
}


def detect_schema(branches: set[str]) -> str | None:
    """The one schema whose branches are all present; None if none or several match."""
    found = [s for s, need in SCHEMA_BRANCHES.items() if set(need) <= branches]
    return found[0] if len(found) == 1 else None
