"""The DL-trigger per-event algorithm written the obvious way, one event at a time in plain Python, as
the reference (shared/reference/dl-trigger.md) states it: the oracle that the vectorised ingestion is
compared with (tests/jobs/test_ingest.py) and timed against (bench/ingest.py).

Deliberately independent of jobs.ingest.features: its own constants, its own loops, math
instead of the shared formulas. Only the isolation sum uses numpy, over one event's particles at a time
(the reference itself sums each cone with numpy).
"""

from __future__ import annotations

import math

import awkward as ak
import numpy as np


def events_as_dicts(arrays: ak.Array) -> list[dict[str, list[dict]]]:
    """Each event as {collection: [{field: value}, ...]} from arrays with '<Collection>.<Field>' fields."""
    fields: dict[str, list[str]] = {}
    for name in arrays.fields:
        coll, field = name.split(".")
        fields.setdefault(coll, []).append(field)
    cols = {k: ak.to_list(arrays[k]) for k in arrays.fields}
    out = []
    for i in range(len(arrays)):
        event = {}
        for coll, names in fields.items():
            n = len(cols[f"{coll}.{names[0]}"][i])
            event[coll] = [{f: cols[f"{coll}.{f}"][i][j] for f in names} for j in range(n)]
        out.append(event)
    return out


def pf_iso(eta, phi, pt, pt_map: np.ndarray, subtract: bool, physical_wrap: bool) -> np.ndarray:
    """Isolation of particles (arrays) against one map [[eta, phi, pt], ...] of the same event."""
    eta, phi, pt = np.asarray(eta, float), np.asarray(phi, float), np.asarray(pt, float)
    d_eta = pt_map[None, :, 0] - eta[:, None]
    d_phi = pt_map[None, :, 1] - phi[:, None]
    limit = math.pi if physical_wrap else 2 * math.pi
    d_phi = d_phi - 2 * math.pi * (d_phi > limit) + 2 * math.pi * (d_phi < -limit)
    in_cone = d_phi * d_phi + d_eta * d_eta < 0.09
    sums = (in_cone * pt_map[None, :, 2]).sum(axis=1)
    iso = np.zeros(len(pt))
    ok = pt > 0
    iso[ok] = sums[ok] / pt[ok] - (1.0 if subtract else 0.0)
    return iso


def _sign(x: float) -> float:
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def _four_vector(pt: float, eta: float, phi: float) -> list[float]:
    """[E, Px, Py, Pz] of a massless particle."""
    return [pt * math.cosh(eta), pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)]


def oracle_event(
    event: dict, physical_phi_wrap: bool = False, mt_sqrt: bool = False, lepton_choice: str = "eta"
) -> tuple[str, list[float] | None, np.ndarray | None]:
    """(last cut passed, 14 HLF or None, 801 x 19 particles or None) for one event."""
    trk_map = [[t["Eta"], t["Phi"], t["PT"]] for t in event["EFlowTrack"] if t["PT"] > 0.5]
    neu_map = [[h["Eta"], h["Phi"], h["ET"]] for h in event["EFlowNeutralHadron"] if h["ET"] > 1.0]
    pho_map = [[h["Eta"], h["Phi"], h["ET"]] for h in event["EFlowPhoton"] if h["ET"] > 1.0]
    if not trk_map or not neu_map or not pho_map:
        return "read", None, None
    maps = [np.array(trk_map, float), np.array(pho_map, float), np.array(neu_map, float)]

    def isolation(objs: list[dict], pt_key: str) -> list[tuple[float, float, float]]:
        """(chIso, gammaIso, neuIso) of each object."""
        if not objs:
            return []
        args = ([o["Eta"] for o in objs], [o["Phi"] for o in objs], [o[pt_key] for o in objs])
        ch = pf_iso(*args, maps[0], True, physical_phi_wrap)
        gamma = pf_iso(*args, maps[1], False, physical_phi_wrap)
        neu = pf_iso(*args, maps[2], False, physical_phi_wrap)
        return list(zip(ch.tolist(), gamma.tolist(), neu.tolist(), strict=True))

    if not event["Electron"] and not event["MuonTight"]:
        return "nonempty_maps", None, None
    found = {}
    for coll, is_ele in (("Electron", 1.0), ("MuonTight", 0.0)):
        cands = [lep for lep in event[coll] if lep["PT"] > 23.0]
        for lep, (ch, gamma, neu) in zip(cands, isolation(cands, "PT"), strict=True):
            if ch + neu + gamma < 0.45:
                found[coll] = (lep, ch, gamma, neu, is_ele)
                break
    if not found:
        return "has_lepton", None, None
    if len(found) == 2:
        key = "Eta" if lepton_choice == "eta" else "PT"
        ele_wins = found["Electron"][0][key] > found["MuonTight"][0][key]
        chosen = found["Electron"] if ele_wins else found["MuonTight"]
    else:
        chosen = next(iter(found.values()))
    lep, ch, gamma, neu, is_ele = chosen

    rows = [
        _four_vector(lep["PT"], lep["Eta"], lep["Phi"])
        + [lep["PT"], lep["Eta"], lep["Phi"], 0.0, 0.0, 0.0, ch, gamma, neu]
        + [0.0, 0.0, 0.0, is_ele, 1.0 - is_ele, float(lep["Charge"])]
    ]
    tracks = []
    for t in event["EFlowTrack"]:
        if len(tracks) >= 450 or t["PT"] <= 0.5:
            continue
        d_phi = t["Phi"] - lep["Phi"]
        while d_phi >= math.pi:
            d_phi -= 2 * math.pi
        while d_phi < -math.pi:
            d_phi += 2 * math.pi
        if math.sqrt((t["Eta"] - lep["Eta"]) ** 2 + d_phi**2) > 1e-4:
            tracks.append(t)
    for t, (c, g, n) in zip(tracks, isolation(tracks, "PT"), strict=True):
        rows.append(
            _four_vector(t["PT"], t["Eta"], t["Phi"])
            + [t["PT"], t["Eta"], t["Phi"], t["X"], t["Y"], t["Z"], c, g, n]
            + [1.0, 0.0, 0.0, 0.0, 0.0, _sign(t["PID"])]
        )
    for coll, cap, flags in (
        ("EFlowPhoton", 150, [0.0, 0.0, 1.0]),
        ("EFlowNeutralHadron", 200, [0.0, 1.0, 0.0]),
    ):
        kept = [h for h in event[coll] if h["ET"] > 1.0][:cap]
        for h, (c, g, n) in zip(kept, isolation(kept, "ET"), strict=True):
            rows.append(
                _four_vector(h["ET"], h["Eta"], h["Phi"])
                + [h["ET"], h["Eta"], h["Phi"], 0.0, 0.0, 0.0, c, g, n]
                + flags
                + [0.0, 0.0, 0.0]
            )
    particles = np.zeros((801, 19))
    particles[: len(rows)] = rows

    ht, n_jets, n_b = 0.0, 0, 0
    for jet in event["Jet"]:
        if jet["PT"] > 30 and abs(jet["Eta"]) < 2.6:
            ht += jet["PT"]
            n_jets += 1
            n_b += jet["BTag"] > 0
    met, phi_met = event["MissingET"][0]["MET"], event["MissingET"][0]["Phi"]
    mt = 2.0 * met * lep["PT"] * (1.0 - math.cos(lep["Phi"] - phi_met))
    if mt_sqrt:
        mt = math.sqrt(mt)
    hlf = [ht, met, phi_met, mt, n_jets, n_b, lep["PT"], lep["Eta"], lep["Phi"], ch, gamma, neu]
    hlf += [float(lep["Charge"]), is_ele]
    return "isolated_lepton", hlf, particles
