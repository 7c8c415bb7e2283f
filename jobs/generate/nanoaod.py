"""NanoAOD-style di-muon sample: a falling continuum plus the PDG resonances (eta ... Z) decayed
isotropically, boosted, and smeared by a muon pT resolution; 0-4 muons per event with both charges so
that every cut of the selection removes something. Vectorised numpy; deterministic for a seed."""

from __future__ import annotations

import logging
import os
import time

import awkward as ak
import numpy as np
import uproot

from jobs.core import physics
from jobs.core.commit import atomic_output_dir

log = logging.getLogger(__name__)

MUON_MASS = 0.1056583755  # GeV, PDG
MASS_RANGE = (0.25, 300.0)

# name: (mass GeV, width GeV, share of decay pairs); PDG 2024 masses and widths.
RESONANCES: dict[str, tuple[float, float, float]] = {
    "eta": (0.547862, 1.31e-6, 0.015),
    "rho": (0.77526, 0.1474, 0.02),
    "omega": (0.78266, 0.00868, 0.03),
    "phi": (1.019461, 0.004249, 0.04),
    "J/psi": (3.096900, 9.26e-5, 0.16),
    "psi(2S)": (3.686097, 2.94e-4, 0.02),
    "Upsilon(1S)": (9.46040, 5.4e-5, 0.06),
    "Upsilon(2S)": (10.02326, 3.2e-5, 0.02),
    "Upsilon(3S)": (10.3552, 2.03e-5, 0.012),
    "Z": (91.1880, 2.4955, 0.05),
}
CONTINUUM_SHARE = 1.0 - sum(r[2] for r in RESONANCES.values())
N_MUON_PROBS = np.array([0.04, 0.36, 0.50, 0.07, 0.03])  # P(nMuon = 0..4)
DECAY_PAIR_PROB = 0.6  # else the two leading muons are unrelated, with random charges
PT_RESOLUTION = 0.012  # relative muon pT resolution (sigma/pT)
EVENTS_PER_BASKET = 500_000
BYTES_PER_EVENT = 45  # on disk (LZ4); 43.4 measured on 200k events, for the free-space check


def _continuum_mass(rng: np.random.Generator, n: int) -> np.ndarray:
    """Falling Drell-Yan-like continuum, dN/dm ~ m^-2.5 over the histogram range (inverse CDF)."""
    a = -1.5  # exponent of the CDF for m^-2.5
    lo, hi = MASS_RANGE[0] ** a, MASS_RANGE[1] ** a
    return (lo + rng.random(n) * (hi - lo)) ** (1 / a)


def _resonance_mass(rng: np.random.Generator, mass: float, width: float, n: int) -> np.ndarray:
    """Breit-Wigner (Cauchy) line shape, truncated to +-10 widths and above the di-muon threshold."""
    m = mass + 0.5 * width * np.tan(np.pi * (rng.random(n) - 0.5) * 0.9365)  # 0.9365: |x| < 10 widths
    return np.maximum(m, 2 * MUON_MASS + 1e-3)


def parent_masses(rng: np.random.Generator, n: int) -> np.ndarray:
    shares = np.array([CONTINUUM_SHARE] + [r[2] for r in RESONANCES.values()])
    which = rng.choice(len(shares), size=n, p=shares / shares.sum())
    m = _continuum_mass(rng, n)
    for i, (mass, width, _) in enumerate(RESONANCES.values(), start=1):
        sel = which == i
        m[sel] = _resonance_mass(rng, mass, width, int(sel.sum()))
    return m


def two_body_decay(rng: np.random.Generator, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic decay of parents of mass m into two muons, boosted into the lab.
    Returns (2, n, 3) momenta; the parent has an exponential pT and a flat rapidity-like eta."""
    n = m.size
    pt = rng.exponential(4.0 + 0.3 * m)
    eta = rng.uniform(-2.4, 2.4, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    p = np.stack(physics.px_py_pz(pt, eta, phi), axis=-1)
    e = np.sqrt((p * p).sum(-1) + m * m)
    beta = p / e[:, None]
    gamma = e / m
    # daughter in the rest frame
    q = np.sqrt(np.maximum(m * m / 4 - MUON_MASS**2, 0.0))
    cos_t = rng.uniform(-1, 1, n)
    sin_t = np.sqrt(1 - cos_t**2)
    ph = rng.uniform(-np.pi, np.pi, n)
    qv = q[:, None] * np.stack([sin_t * np.cos(ph), sin_t * np.sin(ph), cos_t], axis=-1)
    estar = m / 2
    b2 = np.maximum((beta * beta).sum(-1), 1e-300)
    out = []
    for sign in (1.0, -1.0):
        d = sign * qv
        bp = (beta * d).sum(-1)
        out.append(d + (((gamma - 1) * bp / b2) + gamma * estar)[:, None] * beta)
    return out[0], out[1]


def random_muons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Unrelated muons (decays in flight, heavy flavour): falling pT above 3 GeV, flat eta, random charge."""
    pt = 3.0 + rng.exponential(5.0, n)
    eta = rng.uniform(-2.4, 2.4, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    charge = rng.choice(np.array([-1, 1], dtype=np.int32), n)
    return pt, eta, phi, charge


def generate_events(rng: np.random.Generator, n: int) -> ak.Array:
    """n events as a NanoAOD-like record array of jagged Muon fields, sorted by pT within an event."""
    n_mu = rng.choice(5, size=n, p=N_MUON_PROBS)
    cols = np.arange(4)[None, :]
    pt, eta, phi, charge = (x.reshape(n, 4) for x in random_muons(rng, 4 * n))
    decay = (n_mu >= 2) & (rng.random(n) < DECAY_PAIR_PROB)
    idx = np.flatnonzero(decay)
    m = parent_masses(rng, idx.size)
    p1, p2 = two_body_decay(rng, m)
    q1 = rng.choice(np.array([-1, 1], dtype=np.int32), idx.size)
    for slot, (p, q) in enumerate(((p1, q1), (p2, -q1))):
        dpt, deta, dphi = physics.pt_eta_phi(p[:, 0], p[:, 1], p[:, 2])
        pt[idx, slot], eta[idx, slot], phi[idx, slot], charge[idx, slot] = dpt, deta, dphi, q
    pt = pt * (1 + PT_RESOLUTION * rng.standard_normal(pt.shape))
    present = cols < n_mu[:, None]
    order = np.argsort(np.where(present, -pt, np.inf), axis=1, kind="stable")
    take = lambda a: np.take_along_axis(a, order, axis=1)[present]  # noqa: E731 - local shorthand
    counts = n_mu.astype(np.int64)
    muon = ak.zip(
        {
            "pt": ak.unflatten(take(pt).astype(np.float32), counts),
            "eta": ak.unflatten(take(eta).astype(np.float32), counts),
            "phi": ak.unflatten(take(phi).astype(np.float32), counts),
            "mass": ak.unflatten(np.full(counts.sum(), MUON_MASS, np.float32), counts),
            "charge": ak.unflatten(take(charge).astype(np.int32), counts),
        }
    )
    return muon


def _file_events(total: int, files: int) -> list[int]:
    base, extra = divmod(total, files)
    return [base + (i < extra) for i in range(files)]


def generate(events: int, output: str, files: int = 1, seed: int = 42) -> list[str]:
    """Write `events` events over `files` files `nanoaod_NNNN.root` (tree Events) under `output`."""
    t0 = time.perf_counter()
    names = []
    with atomic_output_dir(output) as staging:
        for i, n_file in enumerate(_file_events(events, files)):
            rng = np.random.default_rng([seed, i])
            name = f"nanoaod_{i:04d}.root"
            with uproot.recreate(os.path.join(staging, name), compression=uproot.LZ4(1)) as f:
                tree = None
                for start in range(0, n_file, EVENTS_PER_BASKET):
                    muon = generate_events(rng, min(EVENTS_PER_BASKET, n_file - start))
                    # mktree: plain assignment would write an RNTuple, NanoAOD is a TTree
                    tree = tree or f.mktree("Events", {"Muon": muon.type.content})
                    tree.extend({"Muon": muon})
            names.append(name)
    dt = time.perf_counter() - t0
    log.info(
        "wrote %d events in %d file(s) to %s in %.1f s (%.2f M events/s)",
        events,
        files,
        output,
        dt,
        events / dt / 1e6,
    )
    return [f"{output.rstrip('/')}/{n}" for n in names]
