"""Small synthetic prepared DL-trigger sets (the jobs.prepare contract, global-scaling mode) for tests
and benchmarks of the training side, written both as TFRecord shards and as Parquet.

The generator is built so that a model can learn and so that what it learns can be bounded:
- the high-level features carry a weak class signal (a shift of a few of the 14 columns), so a linear
  model on HLF alone reaches a modest AUC;
- the particle list carries a stronger one: the number of real particles and the mean of the Pt
  column and the charged-hadron fraction depend on the class. Only a model that reads the particle
  rows (the GRU branch) can use it, so "AUC above the HLF-only AUC" shows the GRU learned.
Real rows come first (row 0 is the lepton) and padded rows are exactly 0, as jobs.prepare writes in
global-scaling mode. `max_particles` keeps the real lists short so tests stay cheap on a CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core.tensors import numpy_to_nested, one_hot
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    GRU_COLUMN,
    HLF_COLUMN,
    LABEL_COLUMN,
    N_CLASSES,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    PARTICLE_FEATURES,
)
from jobs.tfrecords.example import ShardWriter, encode_examples

PT = PARTICLE_FEATURES.index("Pt")
IS_CH_HAD = PARTICLE_FEATURES.index("isChHad")
IS_NEU_HAD = PARTICLE_FEATURES.index("isNeuHad")
IS_GAMMA = PARTICLE_FEATURES.index("isGamma")
IS_ELE = PARTICLE_FEATURES.index("isEle")
IS_MU = PARTICLE_FEATURES.index("isMu")
CHARGE = PARTICLE_FEATURES.index("Charge")

# per class (qcd, ttbar, wjets): real-particle count range, mean scaled Pt, charged-hadron fraction
_N_RANGE = ((4, 20), (14, 32), (8, 26))
_PT_MEAN = (-0.6, 0.6, 0.0)
_CH_FRAC = (0.35, 0.75, 0.55)
_HLF_SHIFT = 0.12  # class shift of HLF columns 0..2 (HT, MET, phiMET) on a U(0,1)-ish base


@dataclass
class PreparedArrays:
    hlf: np.ndarray  # (n, 14) float32
    gru: np.ndarray  # (n, 801, 19) float32
    label: np.ndarray  # (n, 3) float32 one-hot
    n_particles: np.ndarray  # (n,) int64

    @property
    def classes(self) -> np.ndarray:
        return self.label.argmax(axis=1)

    def __len__(self) -> int:
        return self.hlf.shape[0]


def generate(n_events: int, seed: int = 0, max_particles: int = 32) -> PreparedArrays:
    """Balanced classes in random order; `max_particles` caps the real rows (<= 801)."""
    if not 1 <= max_particles <= N_PARTICLES:
        raise ValueError(f"max_particles must be in 1..{N_PARTICLES}, got {max_particles}")
    rng = np.random.default_rng(seed)
    cls = rng.permutation(np.arange(n_events) % N_CLASSES)
    scale = max_particles / 32.0
    lo = np.array([max(2, int(a * scale)) for a, _ in _N_RANGE])[cls]
    hi = np.array([max(3, int(b * scale)) for _, b in _N_RANGE])[cls]
    n = np.minimum(rng.integers(lo, hi + 1), max_particles).astype(np.int64)

    hlf = rng.uniform(0.0, 1.0, size=(n_events, N_HLF)).astype(np.float32)
    shift = (cls.astype(np.float32) - 1.0) * _HLF_SHIFT
    hlf[:, :3] = np.clip(hlf[:, :3] * 0.8 + 0.1 + shift[:, None], 0.0, 1.0)

    gru = np.zeros((n_events, N_PARTICLES, N_PARTICLE_FEATURES), dtype=np.float32)
    width = int(n.max())
    block = rng.normal(0.0, 1.0, size=(n_events, width, N_PARTICLE_FEATURES)).astype(np.float32)
    block[:, :, PT] += np.asarray(_PT_MEAN, dtype=np.float32)[cls][:, None]
    block[:, :, IS_CH_HAD : CHARGE + 1] = 0.0
    u = rng.uniform(size=(n_events, width))
    ch_frac = np.asarray(_CH_FRAC)[cls][:, None]
    kind = np.where(u < ch_frac, IS_CH_HAD, np.where(u < ch_frac + (1 - ch_frac) / 2, IS_GAMMA, IS_NEU_HAD))
    np.put_along_axis(block, kind[:, :, None], 1.0, axis=2)
    charged = kind == IS_CH_HAD
    block[:, :, CHARGE] = np.where(charged, rng.choice([-1.0, 1.0], size=(n_events, width)), 0.0)
    # row 0 is the lepton: electron or muon, charged
    block[:, 0, IS_CH_HAD : IS_GAMMA + 1] = 0.0
    is_ele = rng.uniform(size=n_events) < 0.5
    block[:, 0, IS_ELE] = is_ele
    block[:, 0, IS_MU] = ~is_ele
    block[:, 0, CHARGE] = rng.choice([-1.0, 1.0], size=n_events)
    real = np.arange(width)[None, :] < n[:, None]
    gru[:, :width] = np.where(real[:, :, None], block, 0.0)
    return PreparedArrays(hlf, gru, one_hot(cls), n)


def _split(n: int, parts: int) -> list[slice]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def write_tfrecords(
    arrays: PreparedArrays, directory: str, shards: int = 2, compression: str = "none"
) -> str:
    """`shards` part-*.tfrecord[.gz] files with n_particles included; returns the directory."""
    os.makedirs(directory, exist_ok=True)
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    for i, sl in enumerate(_split(len(arrays), shards)):
        writer = ShardWriter(os.path.join(directory, f"part-{i:05d}{suffix}"), compression=compression)
        writer.write_all(
            encode_examples(arrays.hlf[sl], arrays.gru[sl], arrays.label[sl], arrays.n_particles[sl])
        )
        writer.close()
    return directory


def write_parquet(arrays: PreparedArrays, directory: str, files: int = 2) -> str:
    """`files` part-*.parquet files with the prepared-set columns; returns the directory."""
    os.makedirs(directory, exist_ok=True)
    for i, sl in enumerate(_split(len(arrays), files)):
        table = pa.table(
            {
                HLF_COLUMN: numpy_to_nested(arrays.hlf[sl]),
                GRU_COLUMN: numpy_to_nested(arrays.gru[sl]),
                LABEL_COLUMN: numpy_to_nested(arrays.label[sl]),
                COUNT_COLUMN: pa.array(arrays.n_particles[sl]),
            }
        )
        pq.write_table(table, os.path.join(directory, f"part-{i:05d}.parquet"))
    return directory


def write_prepared(
    root: str,
    n_train: int,
    n_test: int,
    *,
    seed: int = 0,
    max_particles: int = 32,
    shards: int = 2,
    formats: tuple[str, ...] = ("tfrecord",),
) -> dict[str, str]:
    """Train and test sets under `root`; keys like 'train_tfrecord', 'test_parquet' -> directory."""
    out = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1000)):
        arrays = generate(n, seed=s, max_particles=max_particles)
        if "tfrecord" in formats:
            out[f"{split}_tfrecord"] = write_tfrecords(
                arrays, os.path.join(root, f"{split}_tfrecord"), shards
            )
        if "parquet" in formats:
            out[f"{split}_parquet"] = write_parquet(arrays, os.path.join(root, f"{split}_parquet"), shards)
    return out
