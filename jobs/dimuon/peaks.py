"""Key figures of the di-muon spectrum, for the run's metrics and the nightly trends: the Z peak's
position and width and the J/ψ yield, from the mass histogram alone (numpy: no fit library in the Spark
image). Counts are turned into densities first (the bins are log-spaced), and a straight-line
background from sidebands is subtracted. The Z: a Gaussian through the background-subtracted peak
(a weighted parabola in log density, whose vertex and curvature are the mean and width). The J/ψ:
events in its window minus the sidebands' density times the window's width. The Z figures carry their
statistical 1σ uncertainties (`mass_error`, `width_error`, GeV) from Poisson replicas of the spectrum."""

from __future__ import annotations

import numpy as np

Z_PEAK = (80.0, 102.0)
Z_SIDEBANDS = ((65.0, 78.0), (104.0, 120.0))
JPSI_WINDOW = (2.95, 3.25)
JPSI_SIDEBANDS = ((2.70, 2.90), (3.30, 3.50))
MIN_EVENTS = 50  # fewer in a peak: no figure rather than a noisy one


def _density(edges: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    widths = np.diff(edges)
    return 0.5 * (edges[1:] + edges[:-1]), widths, counts / widths


def _in(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return (x >= window[0]) & (x < window[1])


def _background(x: np.ndarray, density: np.ndarray, sidebands) -> np.ndarray | None:
    """A straight line through the sidebands' densities, evaluated at x."""
    side = _in(x, sidebands[0]) | _in(x, sidebands[1])
    if side.sum() < 2:
        return None
    slope, intercept = np.polyfit(x[side], density[side], 1)
    return np.maximum(slope * x + intercept, 0.0)


def _z_fit(edges: np.ndarray, counts: np.ndarray) -> dict[str, float] | None:
    """{mass, width, events} of the Z peak (GeV), or None with too few events under it."""
    x, widths, density = _density(edges, counts)
    background = _background(x, density, Z_SIDEBANDS)
    peak = _in(x, Z_PEAK)
    if background is None:
        return None
    signal = (density - background)[peak]
    events = float((signal * widths[peak]).sum())
    good = signal > 0
    if events < MIN_EVENTS or good.sum() < 5:
        return None
    c2, c1, _ = np.polyfit(x[peak][good], np.log(signal[good]), 2, w=np.sqrt(counts[peak][good]))
    if c2 >= 0:
        return None
    return {"mass": float(-c1 / (2 * c2)), "width": float(np.sqrt(-1.0 / (2 * c2))), "events": round(events)}


REPLICAS = 40  # Poisson replicas of the spectrum that give the fit's uncertainties


def z_peak(edges: np.ndarray, counts: np.ndarray) -> dict[str, float] | None:
    """The Z figures with their 1σ uncertainties (`mass_error`, `width_error`, GeV): the spread of the
    same fit over Poisson replicas of the histogram (seeded: the same spectrum, the same errors)."""
    keep = (edges[:-1] >= Z_SIDEBANDS[0][0]) & (edges[1:] <= Z_SIDEBANDS[1][1])  # the bins the fit reads
    edges, counts = np.append(edges[:-1][keep], edges[1:][keep][-1:]), counts[keep]
    if len(counts) == 0:
        return None
    central = _z_fit(edges, counts)
    if central is None:
        return None
    rng = np.random.default_rng(12345)
    fits = [f for _ in range(REPLICAS) if (f := _z_fit(edges, rng.poisson(counts).astype(float)))]
    if len(fits) >= REPLICAS // 2:
        central["mass_error"] = float(np.std([f["mass"] for f in fits], ddof=1))
        central["width_error"] = float(np.std([f["width"] for f in fits], ddof=1))
    return central


def jpsi_yield(edges: np.ndarray, counts: np.ndarray) -> dict[str, float] | None:
    """{events} of the J/ψ above the sidebands' level, or None with too few."""
    x, widths, density = _density(edges, counts)
    background = _background(x, density, JPSI_SIDEBANDS)
    window = _in(x, JPSI_WINDOW)
    if background is None or not window.any():
        return None
    events = float(((density - background) * widths)[window].sum())
    return {"events": round(events)} if events >= MIN_EVENTS else None


def peaks(edges: np.ndarray, counts: np.ndarray) -> dict[str, dict[str, float]]:
    """The figures that exist for this spectrum: {"Z": {...}, "J/psi": {...}}."""
    found = {"Z": z_peak(edges, counts), "J/psi": jpsi_yield(edges, counts)}
    return {k: v for k, v in found.items() if v is not None}
