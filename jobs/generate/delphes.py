"""Delphes-style DL-trigger samples: tt-bar, W+jets and QCD events with the collections the ingestion
reads, laid out like real Delphes output (tree ``Delphes``, leaves ``<Collection>.<Field>`` with counters
``<Collection>_size``), so generated and real files go through one reader.

Physics shape, enough for the selection to have work to do and a classifier something to learn:
tt-bar has an isolated lepton, >= 4 jets with ~2 b-tags, large HT and real MET; W+jets an isolated lepton
from a W decay (Jacobian peak near m_W/2, MET from the neutrino, MT near m_W) and 0-2 jets; QCD has
leptons inside jets (most fail the isolation cut), small MET and several jets. Particle multiplicities
have long tails so the 450/150/200 caps of the particle list are sometimes reached. Vectorised numpy over
batches of events; deterministic for a seed (one stream per class and file).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import awkward as ak
import numpy as np
import uproot

from jobs.core.commit import atomic_output_dir
from jobs.dltrigger_schema import CLASSES, SAMPLES, TREE
from jobs.generate.nanoaod import _file_events, two_body_decay

log = logging.getLogger(__name__)

W_MASS, W_WIDTH = 80.377, 2.085  # GeV, PDG
EVENTS_PER_BASKET = 2_000  # one basket per extend: small enough for entry-range reads
# on disk per --events unit (one event of each of the three classes; 7.06 kB each measured on 2000
# events per class), for the free-space check
BYTES_PER_EVENT = 21_500
TWO_PI = 2 * np.pi


@dataclass(frozen=True)
class ClassShape:
    """Per-class knobs of the toy event model."""

    n_jets_min: int
    n_jets_mean: float  # Poisson mean on top of the minimum
    jet_pt_min: float
    jet_pt_scale: float
    b_jets: int  # jets from b quarks (leading ones), tagged with 80% efficiency
    mistag: float
    w_leptons: bool  # the hard lepton comes from a W decay (with its neutrino as MET)
    lepton_iso_scale: float  # mean extra cone pT around the hard lepton, as a fraction of its pT
    qcd_iso_prob: float  # QCD: chance that the in-jet lepton looks isolated
    met_scale: float  # QCD-like fake MET scale
    tracks: float  # median of the underlying-event track count
    photons: float
    neutrals: float


SHAPES: dict[str, ClassShape] = {
    "qcd": ClassShape(2, 2.0, 20.0, 40.0, 0, 0.06, False, 0.9, 0.35, 12.0, 150, 60, 50),
    "ttbar": ClassShape(4, 1.2, 25.0, 60.0, 2, 0.02, True, 0.05, 0.0, 8.0, 170, 65, 55),
    "wjets": ClassShape(0, 0.8, 20.0, 35.0, 0, 0.02, True, 0.05, 0.0, 8.0, 120, 55, 45),
}
MULTIPLICITY_SIGMA = 0.55  # log-normal width of the particle counts: long tails reach the caps
QUIET_PROB = 0.01  # events without any neutral hadron (the empty-map cut)
NO_LEPTON_PROB = 0.02


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % TWO_PI - np.pi


def _counts(rng: np.random.Generator, median: float, n: int) -> np.ndarray:
    return np.minimum(rng.lognormal(np.log(median), MULTIPLICITY_SIGMA, n), 2000).astype(np.int64)


class Particles:
    """Flat pieces of one collection (event index plus fields), concatenated and ordered at the end."""

    def __init__(self) -> None:
        self.pieces: list[dict[str, np.ndarray]] = []

    def add(self, **fields: np.ndarray) -> None:
        self.pieces.append(fields)

    def jagged(self, rng: np.random.Generator, n: int, keep: np.ndarray | None = None) -> ak.Array:
        """One record array per event; the order inside an event is random (like Delphes' own)."""
        cols = {k: np.concatenate([p[k] for p in self.pieces]) for k in self.pieces[0]}
        evt = cols.pop("evt")
        if keep is not None:
            sel = keep[evt]
            evt = evt[sel]
            cols = {k: v[sel] for k, v in cols.items()}
        order = np.lexsort((rng.random(evt.size), evt))
        counts = np.bincount(evt, minlength=n)
        return ak.zip({k: ak.unflatten(v[order], counts) for k, v in cols.items()})


def _around(rng: np.random.Generator, eta: np.ndarray, phi: np.ndarray, width: float):
    return eta + rng.normal(0, width, eta.size), _wrap(phi + rng.normal(0, width, eta.size))


def _vertex(rng: np.random.Generator, n: int, z_event: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "X": rng.normal(0, 0.01, n).astype(np.float32),
        "Y": rng.normal(0, 0.01, n).astype(np.float32),
        "Z": (z_event + rng.normal(0, 0.05, n)).astype(np.float32),
    }


def _track_pid(rng: np.random.Generator, n: int) -> np.ndarray:
    pid = rng.choice(np.array([211, 321, 2212]), n, p=[0.8, 0.12, 0.08])
    return (pid * rng.choice(np.array([-1, 1]), n)).astype(np.int32)


def generate_events(rng: np.random.Generator, n: int, shape: ClassShape) -> dict[str, ak.Array]:
    """`n` events of one class: a dict of collection name -> jagged record array."""
    f32 = np.float32
    z_event = rng.normal(0, 40.0, n)  # primary vertex z [mm]
    tracks, photons, neutrals = Particles(), Particles(), Particles()

    # jets: leading ones first (b jets for tt-bar), constituents spread around the axis
    n_jets = shape.n_jets_min + rng.poisson(shape.n_jets_mean, n)
    j_evt = np.repeat(np.arange(n), n_jets)
    j_rank = np.arange(j_evt.size) - np.repeat(np.cumsum(n_jets) - n_jets, n_jets)
    j_pt = shape.jet_pt_min + rng.exponential(shape.jet_pt_scale, j_evt.size) / (1 + 0.3 * j_rank)
    j_eta = rng.normal(0, 1.5, j_evt.size)
    j_phi = rng.uniform(-np.pi, np.pi, j_evt.size)
    is_b = j_rank < shape.b_jets
    btag = np.where(is_b, rng.random(j_evt.size) < 0.8, rng.random(j_evt.size) < shape.mistag)
    jets = ak.zip(
        {
            "PT": ak.unflatten(j_pt.astype(f32), n_jets),
            "Eta": ak.unflatten(j_eta.astype(f32), n_jets),
            "Phi": ak.unflatten(j_phi.astype(f32), n_jets),
            "Mass": ak.unflatten((0.12 * j_pt).astype(f32), n_jets),
            "BTag": ak.unflatten(btag.astype(np.int32), n_jets),
        }
    )
    n_const = rng.poisson(j_pt / 5.0) + 1
    c_jet = np.repeat(np.arange(j_evt.size), n_const)
    w = rng.exponential(1.0, c_jet.size)
    c_pt = j_pt[c_jet] * w / np.bincount(c_jet, weights=w, minlength=j_evt.size)[c_jet]
    c_eta, c_phi = _around(rng, j_eta[c_jet], j_phi[c_jet], 0.12)
    kind = rng.choice(3, c_jet.size, p=[0.62, 0.25, 0.13])
    c_evt = j_evt[c_jet]
    for k, coll in enumerate((tracks, photons, neutrals)):
        s = kind == k
        fields = {"evt": c_evt[s], "Eta": c_eta[s].astype(f32), "Phi": c_phi[s].astype(f32)}
        if k == 0:
            coll.add(PT=c_pt[s].astype(f32), **fields, **_vertex(rng, int(s.sum()), z_event[c_evt[s]]),
                     PID=_track_pid(rng, int(s.sum())))  # fmt: skip
        else:
            coll.add(ET=c_pt[s].astype(f32), **fields)

    # underlying event and pile-up: soft particles everywhere, long-tailed multiplicities
    for coll, median, pt0, scale, eta_max in (
        (tracks, shape.tracks, 0.3, 0.9, 2.5),
        (photons, shape.photons, 0.3, 2.0, 3.0),
        (neutrals, shape.neutrals, 0.5, 2.5, 3.0),
    ):
        cnt = _counts(rng, median, n)
        evt = np.repeat(np.arange(n), cnt)
        fields = {
            "evt": evt,
            "Eta": rng.uniform(-eta_max, eta_max, evt.size).astype(f32),
            "Phi": rng.uniform(-np.pi, np.pi, evt.size).astype(f32),
        }
        pt = (pt0 + rng.exponential(scale, evt.size)).astype(f32)
        if coll is tracks:
            pileup_z = rng.normal(0, 40.0, evt.size)
            vtx = _vertex(rng, evt.size, np.where(rng.random(evt.size) < 0.5, z_event[evt], pileup_z))
            coll.add(PT=pt, **fields, **vtx, PID=_track_pid(rng, evt.size))
        else:
            coll.add(ET=pt, **fields)

    # the hard lepton: from a W decay (tt-bar, W+jets) or inside a jet (QCD)
    has_lep = rng.random(n) >= NO_LEPTON_PROB
    is_mu = rng.random(n) < 0.5
    met_x = rng.normal(0, shape.met_scale, n)
    met_y = rng.normal(0, shape.met_scale, n)
    if shape.w_leptons:
        m = np.clip(W_MASS + 0.5 * W_WIDTH * np.tan(np.pi * (rng.random(n) - 0.5) * 0.95), 50, 150)
        p_lep, p_nu = two_body_decay(rng, m)
        l_pt = np.hypot(p_lep[:, 0], p_lep[:, 1])
        l_eta = np.arcsinh(p_lep[:, 2] / l_pt)
        l_phi = np.arctan2(p_lep[:, 1], p_lep[:, 0])
        met_x += p_nu[:, 0]
        met_y += p_nu[:, 1]
        iso_frac = rng.exponential(shape.lepton_iso_scale, n)
    else:
        l_pt = 15.0 + rng.exponential(18.0, n)
        first_jet = np.cumsum(n_jets) - n_jets
        l_eta, l_phi = _around(rng, j_eta[first_jet], j_phi[first_jet], 0.05)
        isolated = rng.random(n) < shape.qcd_iso_prob
        iso_frac = np.where(isolated, rng.exponential(0.08, n), rng.exponential(shape.lepton_iso_scale, n))
    l_eta = np.clip(l_eta, -2.5, 2.5)
    charge = rng.choice(np.array([-1, 1], dtype=np.int32), n)
    # activity in the lepton's isolation cone (its own track is added as an EFlowTrack, like Delphes)
    n_cone = rng.poisson(4, n) + 1
    c_evt = np.repeat(np.arange(n), n_cone)
    w = rng.exponential(1.0, c_evt.size)
    c_pt = (iso_frac * l_pt)[c_evt] * w / np.bincount(c_evt, weights=w, minlength=n)[c_evt] + 0.2
    r = 0.28 * np.sqrt(rng.random(c_evt.size))
    a = rng.uniform(-np.pi, np.pi, c_evt.size)
    c_eta = (l_eta[c_evt] + r * np.cos(a)).astype(f32)
    c_phi = _wrap(l_phi[c_evt] + r * np.sin(a)).astype(f32)
    c_kind = rng.choice(3, c_evt.size, p=[0.6, 0.25, 0.15])
    keep = has_lep[c_evt]
    for k, coll in enumerate((tracks, photons, neutrals)):
        s = keep & (c_kind == k)
        fields = {"evt": c_evt[s], "Eta": c_eta[s], "Phi": c_phi[s]}
        if k == 0:
            coll.add(PT=c_pt[s].astype(f32), **fields, **_vertex(rng, int(s.sum()), z_event[c_evt[s]]),
                     PID=_track_pid(rng, int(s.sum())))  # fmt: skip
        else:
            coll.add(ET=c_pt[s].astype(f32), **fields)
    lep_evt = np.flatnonzero(has_lep)
    l_pt32, l_eta32, l_phi32 = l_pt.astype(f32), l_eta.astype(f32), _wrap(l_phi).astype(f32)
    pid = np.where(is_mu, 13, 11) * -charge  # PDG: the negative lepton has the positive code
    tracks.add(
        evt=lep_evt,
        PT=l_pt32[lep_evt],
        Eta=l_eta32[lep_evt],
        Phi=l_phi32[lep_evt],
        **_vertex(rng, lep_evt.size, z_event[lep_evt]),
        PID=pid[lep_evt].astype(np.int32),
    )

    # soft non-isolated leptons from heavy-flavour decays inside jets: extra candidates that fail
    n_soft = rng.poisson(0.4, n)
    s_evt = np.repeat(np.arange(n), n_soft)
    s_pt = (5.0 + rng.exponential(15.0, s_evt.size)).astype(f32)
    s_eta = rng.uniform(-2.5, 2.5, s_evt.size).astype(f32)
    s_phi = rng.uniform(-np.pi, np.pi, s_evt.size).astype(f32)
    s_mu = rng.random(s_evt.size) < 0.5
    s_q = rng.choice(np.array([-1, 1], dtype=np.int32), s_evt.size)
    for k, coll in enumerate((tracks, neutrals)):  # a hadronic shower around each soft lepton
        shower = (s_pt * rng.uniform(0.3, 1.5, s_evt.size)).astype(f32)
        eta, phi = _around(rng, s_eta.astype(float), s_phi.astype(float), 0.05)
        fields = {"evt": s_evt, "Eta": eta.astype(f32), "Phi": phi.astype(f32)}
        if k == 0:
            coll.add(PT=shower, **fields, **_vertex(rng, s_evt.size, z_event[s_evt]),
                     PID=_track_pid(rng, s_evt.size))  # fmt: skip
        else:
            coll.add(ET=shower, **fields)

    leptons = {}
    for name, mu in (("Electron", False), ("MuonTight", True)):
        hard = lep_evt[is_mu[lep_evt] == mu]
        soft = np.flatnonzero(s_mu == mu)
        evt = np.concatenate([hard, s_evt[soft]])
        cols = {
            "PT": np.concatenate([l_pt32[hard], s_pt[soft]]),
            "Eta": np.concatenate([l_eta32[hard], s_eta[soft]]),
            "Phi": np.concatenate([l_phi32[hard], s_phi[soft]]),
            "Charge": np.concatenate([charge[hard], s_q[soft]]),
        }
        order = np.lexsort((-cols["PT"], evt))  # Delphes sorts leptons by pT
        counts = np.bincount(evt, minlength=n)
        leptons[name] = ak.zip({k: ak.unflatten(v[order], counts) for k, v in cols.items()})

    one = np.ones(n, np.int64)
    met = ak.zip(
        {
            "MET": ak.unflatten(np.hypot(met_x, met_y).astype(f32), one),
            "Eta": ak.unflatten(np.zeros(n, f32), one),
            "Phi": ak.unflatten(np.arctan2(met_y, met_x).astype(f32), one),
        }
    )
    quiet = rng.random(n) < QUIET_PROB
    return {
        "EFlowTrack": tracks.jagged(rng, n),
        "EFlowPhoton": photons.jagged(rng, n),
        "EFlowNeutralHadron": neutrals.jagged(rng, n, keep=~quiet),
        "Electron": leptons["Electron"],
        "MuonTight": leptons["MuonTight"],
        "Jet": jets,
        "MissingET": met,
    }


def write_delphes(path: str, batches) -> None:
    """Write batches of collections (dicts as from generate_events) as a Delphes-layout TTree."""
    with uproot.recreate(path, compression=uproot.LZ4(1)) as f:
        tree = None
        for data in batches:
            if tree is None:
                tree = f.mktree(
                    TREE,
                    {k: v.type.content for k, v in data.items()},
                    counter_name=lambda counted: f"{counted}_size",
                    field_name=lambda outer, inner: f"{outer}.{inner}" if outer else inner,
                )
            tree.extend(data)


def _rename(data: dict[str, ak.Array], old: str, new: str) -> dict[str, ak.Array]:
    return {new if k == old else k: v for k, v in data.items()}


def generate(
    events: int, output: str, files: int = 1, seed: int = 42, muon_branch: str = "MuonTight"
) -> list[str]:
    """Write `events` events per class over `files` files per class: output/<sample>/<sample>_NNNN.root.
    The tight muons go into collection `muon_branch`: MuonTight as in the reference's card, Muon as
    in the standard Delphes cards (the same events either way)."""
    t0 = time.perf_counter()
    written = []
    with atomic_output_dir(output) as staging:
        for c, name in enumerate(CLASSES):
            sample = SAMPLES[name]
            os.makedirs(os.path.join(staging, sample))
            for i, n_file in enumerate(_file_events(events, files)):
                rng = np.random.default_rng([seed, c, i])
                rel = f"{sample}/{sample}_{i:04d}.root"
                batches = (
                    _rename(
                        generate_events(rng, min(EVENTS_PER_BASKET, n_file - s), SHAPES[name]),
                        "MuonTight",
                        muon_branch,
                    )  # fmt: skip
                    for s in range(0, n_file, EVENTS_PER_BASKET)
                )
                write_delphes(os.path.join(staging, rel), batches)
                written.append(rel)
    dt = time.perf_counter() - t0
    log.info("wrote %d events per class in %d file(s) each to %s in %.1f s", events, files, output, dt)
    return [f"{output.rstrip('/')}/{rel}" for rel in written]
