"""Four-vector formulas, array-at-a-time (numpy or awkward arrays alike), one function per formula."""

from __future__ import annotations

import numpy as np


def px_py_pz(pt, eta, phi):
    """Cartesian momentum from collider coordinates."""
    return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)


def energy(pt, eta, mass):
    """E = sqrt(p^2 + m^2) with |p| = pt*cosh(eta)."""
    p = pt * np.cosh(eta)
    return np.sqrt(p * p + mass * mass)


def invariant_mass(e, px, py, pz):
    """sqrt(E^2 - p^2), with tiny negative values from rounding clipped to 0."""
    m2 = e * e - (px * px + py * py + pz * pz)
    return np.sqrt(np.maximum(m2, 0.0))


def pair_mass_ptetaphim(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2):
    """Invariant mass of the sum of two (pt, eta, phi, mass) four-vectors."""
    px1, py1, pz1 = px_py_pz(pt1, eta1, phi1)
    px2, py2, pz2 = px_py_pz(pt2, eta2, phi2)
    e = energy(pt1, eta1, m1) + energy(pt2, eta2, m2)
    return invariant_mass(e, px1 + px2, py1 + py2, pz1 + pz2)


def pt_eta_phi(px, py, pz):
    """Collider coordinates from Cartesian momentum (eta of a particle along the beam is +-inf)."""
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)
    return pt, eta, np.arctan2(py, px)


def delta_phi(phi1, phi2):
    """phi1 - phi2 wrapped into [-pi, pi)."""
    return (phi1 - phi2 + np.pi) % (2 * np.pi) - np.pi


def delta_r2(eta1, phi1, eta2, phi2):
    """Squared angular distance with the physical [-pi, pi) phi wrap."""
    return (eta1 - eta2) ** 2 + delta_phi(phi1, phi2) ** 2


def massless_pair_mass(pt1, eta1, phi1, pt2, eta2, phi2):
    """mll = sqrt(2 pt1 pt2 (cosh(d_eta) - cos(d_phi))): the CMS Big Data Reduction formula."""
    return np.sqrt(np.maximum(2 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2)), 0.0))
