"""The DL-trigger per-event algorithm (reference: shared/reference/dl-trigger.md), array-at-a-time over a
batch of Delphes events: pT maps, isolation cone sums (numba), lepton selection, the 801 x 19 particle list
and the 14 high-level features.

Every step works on flat numpy arrays plus an event index, so a batch is a handful of array operations
and one compiled loop over (particle, map entry) pairs; there is no per-event Python code. The reference
quirks are the defaults and each has a switch in `Options` (see docs/dl-trigger-ingestion.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numba
import numpy as np

from jobs.core import physics
from jobs.core.errors import BadInputError
from jobs.dltrigger_schema import HLF_NAMES, N_HLF, N_PARTICLE_FEATURES, N_PARTICLES, PARTICLE_FEATURES

# the leaves the algorithm reads, per Delphes collection (leaf name = "<Collection>.<Field>"); the
# tight muons are "MuonTight" in the reference's card, "Muon" in the standard Delphes cards
# (Options.muon_branch names the collection read in its place)
MUON_TIGHT = "MuonTight"
MUON_BRANCHES = (MUON_TIGHT, "Muon")
LEAVES: dict[str, tuple[str, ...]] = {
    "EFlowTrack": ("PT", "Eta", "Phi", "X", "Y", "Z", "PID"),
    "EFlowPhoton": ("ET", "Eta", "Phi"),
    "EFlowNeutralHadron": ("ET", "Eta", "Phi"),
    "Electron": ("PT", "Eta", "Phi", "Charge"),
    "MuonTight": ("PT", "Eta", "Phi", "Charge"),
    "Jet": ("PT", "Eta", "BTag"),
    "MissingET": ("MET", "Phi"),
}


def branches(muon_branch: str = MUON_TIGHT) -> tuple[str, ...]:
    """The leaves to read, with the tight muons taken from collection `muon_branch`."""
    return tuple(
        f"{muon_branch if c == MUON_TIGHT else c}.{f}" for c, fields in LEAVES.items() for f in fields
    )


BRANCHES: tuple[str, ...] = branches()

TRACK_PT_MIN = 0.5  # pT map and particle list: tracks with PT > 0.5
NEUTRAL_ET_MIN = 1.0  # photons and neutral hadrons with ET > 1
LEPTON_PT_MIN = 23.0
ISOLATION_MAX = 0.45  # chIso + neuIso + gammaIso < 0.45
CONE_DR2 = 0.09  # the cone test: deta^2 + dphi^2 < 0.09
ETA_WINDOW = 0.3 + 1e-9  # map entries further away in eta cannot be in the cone
SELF_DR = 1e-4  # tracks closer than this to the lepton are the lepton itself
MAX_TRACKS, MAX_PHOTONS, MAX_NEUTRALS = 450, 150, 200
JET_PT_MIN, JET_ETA_MAX = 30.0, 2.6
LEPTON_CHOICES = ("eta", "pt")

CUTS = ("read", "nonempty_maps", "has_lepton", "isolated_lepton")
COL = {name: i for i, name in enumerate(PARTICLE_FEATURES)}
HLF = {name: i for i, name in enumerate(HLF_NAMES)}
assert MAX_TRACKS + MAX_PHOTONS + MAX_NEUTRALS + 1 == N_PARTICLES


@dataclass(frozen=True)
class Options:
    """Switches from the reference behaviour (the default) to the physically correct form."""

    physical_phi_wrap: bool = False  # reference: the isolation cone wraps dphi at +-2pi (so never)
    mt_sqrt: bool = False  # reference: "MT" is 2 MET pT (1 - cos dphi), i.e. MT squared
    lepton_choice: str = "eta"  # reference: electron vs muon candidate by the larger eta; "pt": larger pT
    muon_branch: str = MUON_TIGHT  # the collection of tight muons (the standard cards call it "Muon")

    def __post_init__(self) -> None:
        if self.lepton_choice not in LEPTON_CHOICES:
            raise ValueError(f"lepton_choice must be one of {LEPTON_CHOICES}, got {self.lepton_choice!r}")


@dataclass
class Features:
    """What a batch of events yields: the selected entries (batch-relative), their features, the number
    of real (non-padding) particle rows, and the events left after each cut of CUTS."""

    entries: np.ndarray  # int64 (m,)
    hlf: np.ndarray  # float32 (m, 14)
    particles: np.ndarray  # float32 (m, 801, 19), real rows first, then exact zeros
    n_particles: np.ndarray  # int64 (m,)
    cutflow: np.ndarray  # int64 (len(CUTS),)


@numba.njit(cache=True, nogil=True)
def _cone_sums(q_evt, q_eta, q_phi, m_start, m_stop, m_eta, m_phi, m_pt, physical_wrap):  # pragma: no cover
    """Sum of map pT with deta^2 + dphi^2 < 0.09 around each query (dphi = map phi - query phi),
    over the map entries of the query's event. The map is sorted by eta within each event, so only the
    entries inside a slightly wider eta window are tested (the test itself is the exact one)."""
    out = np.zeros(q_evt.size)
    two_pi = 2.0 * np.pi
    lim = np.pi if physical_wrap else two_pi
    for i in range(q_evt.size):
        e = q_evt[i]
        lo_eta = q_eta[i] - ETA_WINDOW
        hi_eta = q_eta[i] + ETA_WINDOW
        j = np.searchsorted(m_eta[m_start[e] : m_stop[e]], lo_eta) + m_start[e]
        s = 0.0
        while j < m_stop[e] and m_eta[j] <= hi_eta:
            deta = m_eta[j] - q_eta[i]
            dphi = m_phi[j] - q_phi[i]
            if dphi > lim:
                dphi -= two_pi
            elif dphi < -lim:
                dphi += two_pi
            if dphi * dphi + deta * deta < CONE_DR2:
                s += m_pt[j]
            j += 1
        out[i] = s
    return out


@numba.njit(cache=True, nogil=True)
def _argsort_segments(start, stop, values):  # pragma: no cover
    """An index that sorts `values` within each [start, stop) segment, segments staying in place."""
    order = np.empty(values.size, dtype=np.int64)
    for e in range(start.size):
        order[start[e] : stop[e]] = np.argsort(values[start[e] : stop[e]]) + start[e]
    return order


def _flat(array: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """(counts per event, flat values) of a jagged array: straight from the offsets and the content of
    uproot's list layout (no copy), ak.num/ak.flatten for any other layout."""
    layout = ak.to_layout(array)
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        offsets = np.asarray(layout.offsets)
        return np.diff(offsets), np.asarray(layout.content.data)[offsets[0] : offsets[-1]]
    return np.asarray(ak.num(array, axis=1), dtype=np.int64), np.asarray(ak.flatten(array, axis=1))


@dataclass
class Collection:
    """One jagged collection as flat float64/int arrays plus the event index of each element."""

    n_events: int
    evt: np.ndarray
    fields: dict[str, np.ndarray]

    @classmethod
    def from_arrays(cls, arrays: ak.Array, name: str, fields: tuple[str, ...]) -> Collection:
        counts, first = _flat(arrays[f"{name}.{fields[0]}"])
        evt = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        flat = {fields[0]: first} | {f: _flat(arrays[f"{name}.{f}"])[1] for f in fields[1:]}
        return cls(len(counts), evt, flat)

    def select(self, mask: np.ndarray, fields: tuple[str, ...] | None = None) -> Collection:
        """The elements where `mask` (a boolean mask or an index), with all or only `fields`."""
        keep = self.fields if fields is None else fields
        return Collection(self.n_events, self.evt[mask], {k: self.fields[k][mask] for k in keep})

    def counts(self) -> np.ndarray:
        return np.bincount(self.evt, minlength=self.n_events)

    def __getitem__(self, field: str) -> np.ndarray:
        return self.fields[field]


@dataclass
class PtMap:
    """[Eta, Phi, PT] of one map, grouped by event and sorted by eta within an event, with each event's
    [start, stop) range."""

    start: np.ndarray
    stop: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    pt: np.ndarray

    @classmethod
    def from_collection(cls, coll: Collection, pt_field: str) -> PtMap:
        counts = coll.counts()
        stop = np.cumsum(counts)
        eta = coll["Eta"].astype(np.float64)
        order = _argsort_segments(stop - counts, stop, eta)
        return cls(
            stop - counts,
            stop,
            eta[order],
            coll["Phi"].astype(np.float64)[order],
            coll[pt_field].astype(np.float64)[order],
        )

    def nonempty(self) -> np.ndarray:
        return self.stop > self.start


def pf_isolation(
    evt: np.ndarray, eta: np.ndarray, phi: np.ndarray, pt: np.ndarray, pt_map: PtMap, subtract: bool,
    physical_wrap: bool,
) -> np.ndarray:  # fmt: skip
    """iso = sum(pT in the 0.3 cone) / pT(p), minus 1 for the charged map (the particle itself);
    0 where pT(p) <= 0."""
    sums = _cone_sums(
        evt, eta.astype(np.float64), phi.astype(np.float64), pt_map.start, pt_map.stop,
        pt_map.eta, pt_map.phi, pt_map.pt, physical_wrap,
    )  # fmt: skip
    pt = pt.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iso = sums / pt - (1.0 if subtract else 0.0)
    return np.where(pt > 0, iso, 0.0)


def _isolations(coll: Collection, pt_field: str, maps: tuple[PtMap, PtMap, PtMap], physical_wrap: bool):
    """(chIso, gammaIso, neuIso) of each element against the track, photon and neutral-hadron maps."""
    args = (coll.evt, coll["Eta"], coll["Phi"], coll[pt_field])
    trk, pho, neu = maps
    return (
        pf_isolation(*args, trk, True, physical_wrap),
        pf_isolation(*args, pho, False, physical_wrap),
        pf_isolation(*args, neu, False, physical_wrap),
    )


def _first_per_event(evt: np.ndarray, mask: np.ndarray, n_events: int) -> np.ndarray:
    """Index of the first element with `mask` in each event, -1 where none."""
    out = np.full(n_events, -1, dtype=np.int64)
    idx = np.flatnonzero(mask)
    events, first = np.unique(evt[idx], return_index=True)
    out[events] = idx[first]
    return out


def _lepton_candidates(coll: Collection, alive: np.ndarray, maps, physical_wrap: bool):
    """The first lepton of each event with PT > 23 and summed isolation < 0.45, and the isolations."""
    cand = coll.select((coll["PT"] > LEPTON_PT_MIN) & alive[coll.evt])
    ch, gamma, neu = _isolations(cand, "PT", maps, physical_wrap)
    first = _first_per_event(cand.evt, ch + neu + gamma < ISOLATION_MAX, coll.n_events)
    return cand, first, (ch, gamma, neu)


def _take(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """values[idx] where idx >= 0, else 0."""
    return np.where(idx >= 0, values[np.maximum(idx, 0)] if values.size else 0, 0)


def _capped(coll: Collection, mask: np.ndarray, cap: int) -> tuple[Collection, np.ndarray]:
    """The first `cap` elements per event that pass `mask`, and their rank within the event."""
    idx = np.flatnonzero(mask)
    evt = coll.evt[idx]  # grouped by event, in file order
    counts = np.bincount(evt, minlength=coll.n_events)
    rank = np.arange(idx.size) - (np.cumsum(counts) - counts)[evt]  # position within the event
    keep = rank < cap
    return coll.select(idx[keep]), rank[keep]


def _fill_rows(
    out: np.ndarray, index: np.ndarray, coll: Collection, pt_field: str, maps, physical_wrap: bool,
    flag: str, charge: np.ndarray | None = None, vertex: bool = False,
) -> None:  # fmt: skip
    """Write the 19 particle features of each element into rows `index` of `out` (the flat
    (events x 801, 19) float32 particle list): massless four-vector, isolations, the block's flag,
    and for tracks the vertex and charge. Computed in float64, stored as float32."""
    pt = coll[pt_field].astype(np.float64)
    eta = coll["Eta"].astype(np.float64)
    phi = coll["Phi"].astype(np.float64)
    rows = np.zeros((coll.evt.size, N_PARTICLE_FEATURES), dtype=np.float32)
    px, py, pz = physics.px_py_pz(pt, eta, phi)
    rows[:, COL["Energy"]] = physics.energy(pt, eta, 0.0)
    rows[:, COL["Px"]], rows[:, COL["Py"]], rows[:, COL["Pz"]] = px, py, pz
    rows[:, COL["Pt"]], rows[:, COL["Eta"]], rows[:, COL["Phi"]] = pt, eta, phi
    ch, gamma, neu = _isolations(coll, pt_field, maps, physical_wrap)
    rows[:, COL["ChPFIso"]], rows[:, COL["GammaPFIso"]], rows[:, COL["NeuPFIso"]] = ch, gamma, neu
    rows[:, COL[flag]] = 1.0
    if vertex:
        rows[:, COL["vtxX"]], rows[:, COL["vtxY"]], rows[:, COL["vtxZ"]] = coll["X"], coll["Y"], coll["Z"]
    if charge is not None:
        rows[:, COL["Charge"]] = charge
    out[index] = rows


def transverse_mass(met: np.ndarray, met_phi: np.ndarray, pt: np.ndarray, phi: np.ndarray, sqrt: bool):
    """Reference "MT" = 2 MET pT (1 - cos(phi - phiMET)), which is MT^2; `sqrt` gives the true MT."""
    mt2 = 2.0 * met * pt * (1.0 - np.cos(phi - met_phi))
    return np.sqrt(np.maximum(mt2, 0.0)) if sqrt else mt2


def compute(arrays: ak.Array, options: Options = Options(), source: str = "input") -> Features:  # noqa: B008
    """Run the per-event algorithm on a batch of events read with the leaves of
    branches(options.muon_branch)."""
    wrap = options.physical_phi_wrap
    n = len(arrays)
    tracks = Collection.from_arrays(arrays, "EFlowTrack", LEAVES["EFlowTrack"])
    photons = Collection.from_arrays(arrays, "EFlowPhoton", LEAVES["EFlowPhoton"])
    neutrals = Collection.from_arrays(arrays, "EFlowNeutralHadron", LEAVES["EFlowNeutralHadron"])
    electrons = Collection.from_arrays(arrays, "Electron", LEAVES["Electron"])
    muons = Collection.from_arrays(arrays, options.muon_branch, LEAVES[MUON_TIGHT])

    # 1. pT maps; events with an empty map are dropped
    trk_ok = tracks["PT"] > TRACK_PT_MIN
    pho_ok = photons["ET"] > NEUTRAL_ET_MIN
    neu_ok = neutrals["ET"] > NEUTRAL_ET_MIN
    maps = (
        PtMap.from_collection(tracks.select(trk_ok, ("PT", "Eta", "Phi")), "PT"),
        PtMap.from_collection(photons.select(pho_ok), "ET"),
        PtMap.from_collection(neutrals.select(neu_ok), "ET"),
    )
    nonempty = maps[0].nonempty() & maps[1].nonempty() & maps[2].nonempty()
    has_lepton = nonempty & ((electrons.counts() > 0) | (muons.counts() > 0))

    # 2-3. lepton candidates: first isolated electron, first isolated muon; one of them wins
    ele, ele_first, ele_iso = _lepton_candidates(electrons, has_lepton, maps, wrap)
    mu, mu_first, mu_iso = _lepton_candidates(muons, has_lepton, maps, wrap)
    key = "Eta" if options.lepton_choice == "eta" else "PT"
    use_ele = (ele_first >= 0) & ((mu_first < 0) | (_take(ele[key], ele_first) > _take(mu[key], mu_first)))
    use_mu = (mu_first >= 0) & ~use_ele
    selected = np.flatnonzero(use_ele | use_mu)
    m = selected.size
    cutflow = np.array([n, nonempty.sum(), has_lepton.sum(), m], dtype=np.int64)

    def lep(field_e: np.ndarray, field_m: np.ndarray) -> np.ndarray:
        return np.where(use_ele, _take(field_e, ele_first), _take(field_m, mu_first))[selected].astype(float)

    lep_pt, lep_eta, lep_phi = (
        lep(ele["PT"], mu["PT"]),
        lep(ele["Eta"], mu["Eta"]),
        lep(ele["Phi"], mu["Phi"]),
    )
    lep_iso = [lep(e, u) for e, u in zip(ele_iso, mu_iso, strict=True)]  # ch, gamma, neu
    lep_charge = lep(ele["Charge"], mu["Charge"])
    lep_is_ele = use_ele[selected].astype(np.float64)

    slot = np.full(n, -1, dtype=np.int64)  # event -> output row
    slot[selected] = np.arange(m)
    particles = np.zeros((m, N_PARTICLES, N_PARTICLE_FEATURES), dtype=np.float32)
    row0 = np.zeros((m, N_PARTICLE_FEATURES))
    px, py, pz = physics.px_py_pz(lep_pt, lep_eta, lep_phi)
    row0[:, COL["Energy"]] = physics.energy(lep_pt, lep_eta, 0.0)
    row0[:, COL["Px"]], row0[:, COL["Py"]], row0[:, COL["Pz"]] = px, py, pz
    row0[:, COL["Pt"]], row0[:, COL["Eta"]], row0[:, COL["Phi"]] = lep_pt, lep_eta, lep_phi
    row0[:, COL["ChPFIso"]], row0[:, COL["GammaPFIso"]], row0[:, COL["NeuPFIso"]] = lep_iso
    row0[:, COL["isEle"]] = lep_is_ele
    row0[:, COL["isMu"]] = 1.0 - lep_is_ele
    row0[:, COL["Charge"]] = lep_charge
    particles[:, 0] = row0

    # 4. particle list: tracks away from the lepton, photons, neutral hadrons; each block capped
    alive = slot >= 0
    t_slot = slot[tracks.evt]
    t_lep = np.maximum(t_slot, 0)
    d_r = np.sqrt(
        (tracks["Eta"] - lep_eta[t_lep]) ** 2 + physics.delta_phi(tracks["Phi"], lep_phi[t_lep]) ** 2
        if m
        else np.zeros(tracks.evt.size)
    )
    trk, trk_rank = _capped(tracks, trk_ok & alive[tracks.evt] & (d_r > SELF_DR), MAX_TRACKS)
    pho, pho_rank = _capped(photons, pho_ok & alive[photons.evt], MAX_PHOTONS)
    neu, neu_rank = _capped(neutrals, neu_ok & alive[neutrals.evt], MAX_NEUTRALS)
    n_trk, n_pho, n_neu = trk.counts()[selected], pho.counts()[selected], neu.counts()[selected]

    flat = particles.reshape(m * N_PARTICLES, N_PARTICLE_FEATURES)  # a view: rows event*801 + position
    ts, ps, ns = slot[trk.evt], slot[pho.evt], slot[neu.evt]
    _fill_rows(
        flat, ts * N_PARTICLES + 1 + trk_rank, trk, "PT", maps, wrap, "isChHad", np.sign(trk["PID"]), True
    )
    _fill_rows(flat, ps * N_PARTICLES + 1 + n_trk[ps] + pho_rank, pho, "ET", maps, wrap, "isGamma")
    n_before = 1 + n_trk[ns] + n_pho[ns]
    _fill_rows(flat, ns * N_PARTICLES + n_before + neu_rank, neu, "ET", maps, wrap, "isNeuHad")

    # 5. high-level features
    jets = Collection.from_arrays(arrays, "Jet", LEAVES["Jet"])
    good = (jets["PT"] > JET_PT_MIN) & (np.abs(jets["Eta"]) < JET_ETA_MAX)
    ht = np.bincount(jets.evt[good], weights=jets["PT"][good].astype(np.float64), minlength=n)
    n_jets = np.bincount(jets.evt[good], minlength=n)
    n_b = np.bincount(jets.evt[good & (jets["BTag"] > 0)], minlength=n)
    met_c = Collection.from_arrays(arrays, "MissingET", LEAVES["MissingET"])
    met_first = _first_per_event(met_c.evt, np.ones(met_c.evt.size, bool), n)[selected]
    if (met_first < 0).any():
        raise BadInputError(source, "an event passing the selection has an empty MissingET collection")
    met, met_phi = met_c["MET"][met_first].astype(float), met_c["Phi"][met_first].astype(float)
    hlf = np.zeros((m, N_HLF))
    hlf[:, HLF["HT"]], hlf[:, HLF["nJets"]], hlf[:, HLF["nBjets"]] = (
        ht[selected],
        n_jets[selected],
        n_b[selected],
    )
    hlf[:, HLF["MET"]], hlf[:, HLF["phiMET"]] = met, met_phi
    hlf[:, HLF["MT"]] = transverse_mass(met, met_phi, lep_pt, lep_phi, options.mt_sqrt)
    hlf[:, HLF["LepPt"]], hlf[:, HLF["LepEta"]], hlf[:, HLF["LepPhi"]] = lep_pt, lep_eta, lep_phi
    hlf[:, HLF["LepIsoCh"]], hlf[:, HLF["LepIsoGamma"]], hlf[:, HLF["LepIsoNeu"]] = lep_iso
    hlf[:, HLF["LepCharge"]], hlf[:, HLF["LepIsEle"]] = lep_charge, lep_is_ele
    return Features(
        entries=selected,
        hlf=hlf.astype(np.float32),
        particles=particles,
        n_particles=(1 + n_trk + n_pho + n_neu).astype(np.int64),
        cutflow=cutflow,
    )
