"""Per-event feature preparation of the DL trigger, array-at-a-time (numpy only, no Spark or
TensorFlow), shared by jobs.prepare (inside Spark tasks) and by evaluation code that has to apply the
same scaling to new events: ΔR ordering of the particle list, HLF min-max scaling, the two particle
standardisations, and the fitted parameters (_scaler.json) with their partial statistics.

Conventions (see docs/dl-trigger-preparation.md):
- a particle row is *real* when any of its 19 features is non-zero; the ingestion pads with exact
  zeros, and a real particle always has pT > 0;
- ``global`` particle scaling: real rows first, sorted by ΔR to the lepton (row 0 of the input)
  descending, padded rows after them, exactly zero; every real row standardised per column with
  mean and standard deviation of all real rows of the fit set;
- ``per-event`` scaling (the reference): all 801 rows, padded ones included, sorted by ΔR
  descending (a padded row has η = φ = 0, so it lands among the real ones), then each event
  standardised per column over its own 801 rows like sklearn's StandardScaler, which makes padded
  rows non-zero.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from jobs.core.finite import check_finite
from jobs.core.physics import delta_r2
from jobs.core.tensors import one_hot, row_events
from jobs.dltrigger_schema import (
    ETA,
    FEATURE_NAMES,
    HLF_NAMES,
    N_HLF,
    N_PARTICLE_FEATURES,
    PARTICLE_FEATURES,
    PHI,
)

PARTICLE_SCALINGS = ("global", "per-event")
NUMBER_FIELDS = ("hlf_min", "hlf_max", "particle_mean", "particle_std")  # of Scaler: finite or refused
SCALER_FITS = ("train", "all")
_EPS = np.finfo(np.float64).eps


def real_rows(particles: np.ndarray) -> np.ndarray:
    """Rows that are not exact-zero padding: (n, 801) bool of (n, 801, 19) events, (R,) of flat rows."""
    return np.any(particles != 0, axis=-1)


def sort_by_delta_r(particles: np.ndarray, real: np.ndarray | None = None) -> np.ndarray:
    """Rows of each event ordered by ΔR to the lepton (row 0), descending, ties in input order (as
    Python's stable sort with reverse=True in the reference). With `real` given, the padded rows go
    after all real rows instead of being sorted among them by their (meaningless) ΔR."""
    p = particles.astype(np.float64, copy=False)
    dr2 = delta_r2(p[:, :, ETA], p[:, :, PHI], p[:, :1, ETA], p[:, :1, PHI])
    key = -dr2 if real is None else np.where(real, -dr2, np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(particles, order[:, :, None], axis=1)


def standardize_per_event(particles: np.ndarray) -> np.ndarray:
    """sklearn StandardScaler().fit_transform applied to each event's (801, 19) matrix: per column,
    subtract the event mean and divide by the event's population standard deviation (1 for columns
    that are constant within the event), in float64."""
    p = particles.astype(np.float64)
    n_rows = p.shape[1]
    mean = p.mean(axis=1, keepdims=True)
    var = p.var(axis=1, keepdims=True)
    constant = var <= n_rows * _EPS * var + (n_rows * mean * _EPS) ** 2
    scale = np.where(constant, 1.0, np.sqrt(var))
    return ((p - mean) / scale).astype(np.float32)


def standardize_global(
    particles: np.ndarray, real: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """(x - mean) / std for real rows with fitted per-column parameters; padded rows stay exactly 0."""
    scaled = (particles.astype(np.float64) - mean) / std
    return np.where(real[:, :, None], scaled, 0.0).astype(np.float32)


def minmax_scale(hlf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1] per column; a column constant in the fit set maps to 0.5 (what
    Spark's MinMaxScaler, used by the reference, does). Values outside the fit range fall outside
    [0, 1] (the test split when the scaler is fitted on the training split)."""
    lo = np.asarray(lo, dtype=np.float64)
    span = np.asarray(hi, dtype=np.float64) - lo
    x = hlf.astype(np.float64)
    out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.5)
    return out.astype(np.float32)


@dataclass
class FitStats:
    """Partial statistics of a fit set, mergeable in any order: HLF column minima/maxima and the
    count, mean and sum of squared deviations (Chan et al.) of each particle column over real rows."""

    events: int = 0
    hlf_min: np.ndarray = field(default_factory=lambda: np.full(N_HLF, np.inf))
    hlf_max: np.ndarray = field(default_factory=lambda: np.full(N_HLF, -np.inf))
    rows: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(N_PARTICLE_FEATURES))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(N_PARTICLE_FEATURES))

    @classmethod
    def of(cls, hlf: np.ndarray, rows: np.ndarray | None = None) -> FitStats:
        """Statistics of one batch: its HLF (n, 14) and its events' particle rows, flat (R, 19), of which
        the exact-zero padding rows are left out (rows None: HLF only)."""
        out = cls(events=hlf.shape[0])
        if hlf.shape[0]:
            out.hlf_min = hlf.min(axis=0).astype(np.float64)
            out.hlf_max = hlf.max(axis=0).astype(np.float64)
        if rows is not None:
            x = rows[real_rows(rows)].astype(np.float64)
            if x.shape[0]:
                out.rows = x.shape[0]
                out.mean = x.mean(axis=0)
                out.m2 = ((x - out.mean) ** 2).sum(axis=0)
        return out

    def merge(self, other: FitStats) -> FitStats:
        rows = self.rows + other.rows
        if rows:
            delta = other.mean - self.mean
            mean = self.mean + delta * (other.rows / rows)
            m2 = self.m2 + other.m2 + delta**2 * (self.rows * other.rows / rows)
        else:
            mean, m2 = self.mean, self.m2
        return FitStats(
            self.events + other.events,
            np.minimum(self.hlf_min, other.hlf_min),
            np.maximum(self.hlf_max, other.hlf_max),
            rows,
            mean,
            m2,
        )

    def to_row(self) -> dict[str, Any]:
        """As plain lists (one Arrow row) for the trip from a Spark task to the driver."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> FitStats:
        return cls(
            int(row["events"]),
            np.asarray(row["hlf_min"], dtype=np.float64),
            np.asarray(row["hlf_max"], dtype=np.float64),
            int(row["rows"]),
            np.asarray(row["mean"], dtype=np.float64),
            np.asarray(row["m2"], dtype=np.float64),
        )


@dataclass
class Scaler:
    """The fitted preparation: what _scaler.json holds and what evaluation reapplies to new events."""

    particle_scaling: str
    fit_on: str
    hlf_min: list[float]
    hlf_max: list[float]
    particle_mean: list[float] | None = None  # global mode only
    particle_std: list[float] | None = None
    fit_events: int = 0
    fit_particle_rows: int = 0

    @classmethod
    def fit(cls, stats: FitStats, particle_scaling: str, fit_on: str) -> Scaler:
        if particle_scaling not in PARTICLE_SCALINGS:
            raise ValueError(f"particle_scaling must be one of {PARTICLE_SCALINGS}, got {particle_scaling!r}")
        mean = std = None
        if particle_scaling == "global":
            var = stats.m2 / max(stats.rows, 1)
            sd = np.sqrt(var)
            std = np.where(sd < 10 * _EPS * np.maximum(1.0, np.abs(stats.mean)), 1.0, sd).tolist()
            mean = stats.mean.tolist()
        return cls(
            particle_scaling,
            fit_on,
            stats.hlf_min.tolist(),
            stats.hlf_max.tolist(),
            mean,
            std,
            stats.events,
            stats.rows,
        )

    def check_finite(self, source: str) -> None:
        """Refuse a scaler with a non-finite bound, mean or spread (values near float32's limit in the
        fit set overflow the variance): every event it scaled would be NaN."""
        numbers = {k: np.asarray(getattr(self, k), dtype=np.float64) for k in NUMBER_FIELDS
                   if getattr(self, k) is not None}  # fmt: skip
        check_finite(source, numbers, FEATURE_NAMES)

    def transform(self, hlf: np.ndarray, particles: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Raw ingestion arrays (n,14), (n,801,19), (n,) -> the prepared-set columns."""
        real = real_rows(particles)
        if self.particle_scaling == "global":
            n_real = real.sum(axis=1)
            real_first = np.arange(real.shape[1])[None, :] < n_real[:, None]  # the mask after sorting
            gru = standardize_global(
                sort_by_delta_r(particles, real), real_first,
                np.asarray(self.particle_mean), np.asarray(self.particle_std),
            )  # fmt: skip
        else:
            gru = standardize_per_event(sort_by_delta_r(particles))
        return {
            "HLF_input": minmax_scale(hlf, np.asarray(self.hlf_min), np.asarray(self.hlf_max)),
            "GRU_input": gru,
            "encoded_label": one_hot(labels),
            "n_particles": real.sum(axis=1).astype(np.int64),
        }

    def transform_rows(
        self, hlf: np.ndarray, rows: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global scaling only, the same values as `transform` from the particle rows as stored (flat
        (R, 19), `lengths[i]` rows for event i, its row 0 the lepton), without the dense (n, 801)
        work: (scaled HLF (n, 14), the scaled real rows of all events in ΔR order (R', 19) float32,
        the real-row count per event (n,)). `transform`'s GRU_input is these rows zero-padded to 801
        (jobs.core.tensors.pad_rows); the ragged layout stores them as they are."""
        if self.particle_scaling != "global":
            raise ValueError("transform_rows needs global particle scaling (per-event pads non-zero rows)")
        event, starts = row_events(lengths)
        real = np.flatnonzero(real_rows(rows))
        eta = rows[:, ETA].astype(np.float64)
        phi = rows[:, PHI].astype(np.float64)
        lepton = starts[event[real]]
        dr2 = delta_r2(eta[real], phi[real], eta[lepton], phi[lepton])
        # per event by ΔR descending, ties in input order (= sort_by_delta_r): two stable sorts
        by_dr = np.argsort(-dr2, kind="stable")
        order = by_dr[np.argsort(event[real][by_dr], kind="stable")]
        n_real = np.bincount(event[real], minlength=len(lengths))
        mean, std = np.asarray(self.particle_mean), np.asarray(self.particle_std)
        scaled = ((rows[real[order]].astype(np.float64) - mean) / std).astype(np.float32)
        return minmax_scale(hlf, np.asarray(self.hlf_min), np.asarray(self.hlf_max)), scaled, n_real

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["hlf_names"] = list(HLF_NAMES)
        out["particle_features"] = list(PARTICLE_FEATURES)
        out["particle_order"] = (
            "real rows by ΔR to the lepton descending, then zero padding"
            if self.particle_scaling == "global"
            else "all 801 rows by ΔR to the lepton descending (reference)"
        )
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Scaler:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in obj.items() if k in names})


def load_scaler(path: str) -> Scaler:
    """The Scaler saved by jobs.prepare as DIR/_scaler.json (local path or fsspec URL)."""
    from jobs.core.storage import filesystem

    fs, p = filesystem(path)
    with fs.open(p, "r") as f:
        scaler = Scaler.from_json(json.load(f))
    scaler.check_finite(path)
    return scaler
