"""The di-muon spectrum as a physicist expects it: log-x, log-y, CMS style, resonances labelled."""

from __future__ import annotations

import os
import uuid

import hist
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

PEAK_LABELS: dict[str, float] = {
    r"$\eta$": 0.548,
    r"$\rho,\omega$": 0.78,
    r"$\phi$": 1.019,
    r"$J/\psi$": 3.097,
    r"$\psi'$": 3.686,
    r"$\Upsilon$(1,2,3S)": 9.46,
    "Z": 91.19,
}


def plot_spectrum(h: hist.Hist, path: str, *, events: int | None = None, pairs: int | None = None) -> None:
    """Events per GeV (bins are log-spaced, so raw counts would tilt the spectrum), peaks annotated.
    Written to a temp name then renamed."""
    edges = h.axes[0].edges
    density = h.values() / np.diff(edges)
    hep.style.use("CMS")
    fig, ax = plt.subplots(figsize=(10, 7))
    hep.histplot(density, edges, ax=ax, histtype="step", color="black", lw=1.2, label="opposite-charge pairs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(r"$m_{\mu\mu}$ [GeV]")
    ax.set_ylabel("Events / GeV")
    positive = density[density > 0]
    if positive.size:
        ax.set_ylim(positive.min() * 0.5, positive.max() * 20)
    centers = h.axes[0].centers
    for label, mass in PEAK_LABELS.items():
        i = np.searchsorted(edges, mass) - 1
        lo, hi = max(i - 2, 0), min(i + 3, len(density))
        y = density[lo:hi].max() if hi > lo else 0
        if 0 <= i < len(centers) and y > 0:
            ax.annotate(
                label,
                (mass, y),
                xytext=(0, 12),
                textcoords="offset points",
                ha="center",
                fontsize=14,
                arrowprops={"arrowstyle": "-", "lw": 0.6},
            )
    info = []
    if events is not None:
        info.append(f"{events:,} events")
    if pairs is not None:
        info.append(f"{pairs:,} pairs")
    hep.label.exp_text("colliderflow", "di-muon", ax=ax, loc=0)
    if info:
        ax.text(0.98, 0.97, ", ".join(info), transform=ax.transAxes, ha="right", va="top", fontsize=14)
    ax.legend(loc="lower left")
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
