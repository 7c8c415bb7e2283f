"""Synthetic ingestion outputs (the jobs.ingest Parquet contract) for tests and benchmarks of the
stages downstream of ingestion, without running an ingestion.

Layout written under DIR, as jobs.ingest writes it:
- ``label=0/``, ``label=1/``, ``label=2/`` (hive-style partitions) with ``part-*.parquet`` files holding
  ``hfeatures`` (list of 14 float32), ``particles`` (801 lists of 19 float32), ``source_file`` (string)
  and ``entry`` (int64); with ``label_in_files=True`` the files also carry the ``label`` column;
- ``_SUCCESS``, ``_summary.json``, ``_metrics.json``.

The particle list follows the ingestion layout: row 0 the lepton, then a block of 450 track rows,
150 photon rows and 200 neutral-hadron rows, each block filled from its start and padded with
exact-zero rows at its end. Values are random but physically shaped (massless four-vectors built
from pT, eta, phi; flags and charges consistent with the block), and the classes differ a little
(number of particles, HT, nJets) so that downstream tests can see class structure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core.physics import energy, px_py_pz
from jobs.core.storage import METRICS_FILE, SUMMARY_FILE
from jobs.dltrigger_schema import HLF_NAMES, N_HLF, N_PARTICLE_FEATURES, N_PARTICLES, PARTICLE_FEATURES
from jobs.ingest.job import SCHEMA as INGEST_SCHEMA

BLOCKS = (("track", 450), ("photon", 150), ("neutral", 200))  # after the lepton row
_F = {name: i for i, name in enumerate(PARTICLE_FEATURES)}
_H = {name: i for i, name in enumerate(HLF_NAMES)}
# per class (QCD, ttbar, W+jets): mean number of tracks, photons, neutral hadrons; jet multiplicity
_MEAN_COUNTS = ((40, 15, 10), (110, 45, 30), (70, 25, 18))
_MEAN_JETS = (1.0, 4.0, 1.5)


def _block_rows(rng: np.random.Generator, n: int, mean: float, cap: int) -> np.ndarray:
    """Per-event number of filled rows of a block: Poisson around `mean`, at least 1, at most `cap`."""
    return np.clip(rng.poisson(mean, size=n), 1, cap)


def generate_events(n: int, label: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(hfeatures (n, 14), particles (n, 801, 19)) float32 for `n` events of class `label`."""
    rng = np.random.default_rng([seed, label])
    particles = np.zeros((n, N_PARTICLES, N_PARTICLE_FEATURES), dtype=np.float32)
    # lepton
    lep_pt = 23.0 + rng.exponential(20.0, n)
    lep_eta = rng.uniform(-2.4, 2.4, n)
    lep_phi = rng.uniform(-np.pi, np.pi, n)
    is_ele = rng.uniform(size=n) < 0.5
    lep_q = rng.choice([-1.0, 1.0], size=n)
    iso = rng.exponential(0.05, size=(n, 3))
    px, py, pz = px_py_pz(lep_pt, lep_eta, lep_phi)
    lep = particles[:, 0]
    lep[:, _F["Energy"]] = energy(lep_pt, lep_eta, 0.0)
    lep[:, _F["Px"]], lep[:, _F["Py"]], lep[:, _F["Pz"]] = px, py, pz
    lep[:, _F["Pt"]], lep[:, _F["Eta"]], lep[:, _F["Phi"]] = lep_pt, lep_eta, lep_phi
    lep[:, _F["ChPFIso"]], lep[:, _F["GammaPFIso"]], lep[:, _F["NeuPFIso"]] = iso.T
    lep[:, _F["isEle"]], lep[:, _F["isMu"]], lep[:, _F["Charge"]] = is_ele, ~is_ele, lep_q

    start = 1
    for (kind, cap), mean in zip(BLOCKS, _MEAN_COUNTS[label], strict=True):
        counts = _block_rows(rng, n, mean, cap)
        filled = np.arange(cap)[None, :] < counts[:, None]  # padding at the end of the block
        pt = (0.5 if kind == "track" else 1.0) + rng.exponential(3.0, size=(n, cap))
        eta = rng.uniform(-2.5, 2.5, size=(n, cap))
        phi = rng.uniform(-np.pi, np.pi, size=(n, cap))
        block = np.zeros((n, cap, N_PARTICLE_FEATURES), dtype=np.float32)
        bpx, bpy, bpz = px_py_pz(pt, eta, phi)
        block[..., _F["Energy"]] = energy(pt, eta, 0.0)
        block[..., _F["Px"]], block[..., _F["Py"]], block[..., _F["Pz"]] = bpx, bpy, bpz
        block[..., _F["Pt"]], block[..., _F["Eta"]], block[..., _F["Phi"]] = pt, eta, phi
        block[..., _F["ChPFIso"] : _F["NeuPFIso"] + 1] = rng.exponential(0.3, size=(n, cap, 3))
        if kind == "track":
            block[..., _F["vtxX"] : _F["vtxZ"] + 1] = rng.normal(0.0, [0.01, 0.01, 5.0], size=(n, cap, 3))
            block[..., _F["isChHad"]] = 1.0
            block[..., _F["Charge"]] = rng.choice([-1.0, 1.0], size=(n, cap))
        else:
            block[..., _F["isGamma" if kind == "photon" else "isNeuHad"]] = 1.0
        particles[:, start : start + cap] = np.where(filled[..., None], block, 0.0)
        start += cap
    assert start == N_PARTICLES

    hlf = np.zeros((n, N_HLF), dtype=np.float32)
    n_jets = rng.poisson(_MEAN_JETS[label], size=n)
    met = rng.exponential(30.0 + 10.0 * label, size=n)
    met_phi = rng.uniform(-np.pi, np.pi, size=n)
    hlf[:, _H["HT"]] = n_jets * (30.0 + rng.exponential(40.0, size=n))
    hlf[:, _H["MET"]], hlf[:, _H["phiMET"]] = met, met_phi
    hlf[:, _H["MT"]] = 2.0 * met * lep_pt * (1.0 - np.cos(met_phi - lep_phi))
    hlf[:, _H["nJets"]] = n_jets
    hlf[:, _H["nBjets"]] = rng.binomial(n_jets, 0.3 if label == 1 else 0.05)
    hlf[:, _H["LepPt"]], hlf[:, _H["LepEta"]], hlf[:, _H["LepPhi"]] = lep_pt, lep_eta, lep_phi
    hlf[:, _H["LepIsoCh"] : _H["LepIsoNeu"] + 1] = iso
    hlf[:, _H["LepCharge"]], hlf[:, _H["LepIsEle"]] = lep_q, is_ele
    return hlf, particles


def ingested_table(
    hlf: np.ndarray, particles: np.ndarray, source_file: str, first_entry: int = 0, label: int | None = None
) -> pa.Table:
    """The ingestion columns for arrays of events, with jobs.ingest's Arrow schema (fixed-size lists,
    non-nullable), plus `label` when given."""
    n = hlf.shape[0]
    rows = pa.FixedSizeListArray.from_arrays(pa.array(particles.reshape(-1)), N_PARTICLE_FEATURES)
    arrays = [
        pa.FixedSizeListArray.from_arrays(pa.array(hlf.reshape(-1)), N_HLF),
        pa.FixedSizeListArray.from_arrays(rows, N_PARTICLES),
        pa.array([source_file] * n, pa.string()),
        pa.array(np.arange(first_entry, first_entry + n, dtype=np.int64)),
    ]
    schema = INGEST_SCHEMA
    if label is not None:
        arrays.append(pa.array(np.full(n, label, dtype=np.int32)))
        schema = schema.append(pa.field("label", pa.int32(), nullable=False))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_ingested(
    directory: str,
    counts: Mapping[int, int],
    *,
    seed: int = 0,
    events_per_file: int = 2000,
    label_in_files: bool = False,
    compression: str = "zstd",
) -> dict[int, int]:
    """Write a synthetic ingestion output with `counts[label]` events per class into `directory`;
    returns the counts written. Memory stays at one file's worth of events."""
    os.makedirs(directory, exist_ok=True)
    written: dict[int, int] = {}
    for label, total in sorted(counts.items()):
        part_dir = os.path.join(directory, f"label={label}")
        os.makedirs(part_dir, exist_ok=True)
        for i, first in enumerate(range(0, total, events_per_file)):
            n = min(events_per_file, total - first)
            hlf, particles = generate_events(n, label, seed=seed * 1_000_003 + i)
            source = f"synthetic://class{label}/file{i:04d}.root"
            table = ingested_table(hlf, particles, source, 0, label if label_in_files else None)
            pq.write_table(table, os.path.join(part_dir, f"part-{i:05d}.parquet"), compression=compression)
        written[label] = total
    with open(os.path.join(directory, "_SUCCESS"), "w"):
        pass
    summary = {"events_per_class": {str(k): v for k, v in written.items()}, "synthetic": True}
    with open(os.path.join(directory, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(directory, METRICS_FILE), "w") as f:
        json.dump({"stage": "ingest", "events": sum(written.values()), "synthetic": True}, f, indent=2)
    return written
