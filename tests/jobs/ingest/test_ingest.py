"""DL-trigger ingestion: hand-built events with hand-worked features, equality with the per-event oracle
on generated samples, the quirk switches, independence of the Spark task split, and bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import awkward as ak
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import uproot

from bench.fixtures.delphes_oracle import events_as_dicts, oracle_event
from jobs.core import cli
from jobs.core.errors import BadInputError, UsageError
from jobs.core.tensors import nested_to_numpy, particles_to_numpy
from jobs.dltrigger_schema import (
    CLASSES,
    HLF_NAMES,
    LABELS,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    PARTICLE_FEATURES,
    SAMPLES,
    TREE,
)
from jobs.generate.delphes import generate
from jobs.ingest import job as ingest
from jobs.ingest.features import BRANCHES, CUTS, Features, Options, compute
from tests.jobs.rntuple_fixture import tree_to_rntuple

H = {n: i for i, n in enumerate(HLF_NAMES)}
C = {n: i for i, n in enumerate(PARTICLE_FEATURES)}
ISO = [C["ChPFIso"], C["GammaPFIso"], C["NeuPFIso"]]
F32 = np.float32

# ---------------------------------------------------------------------------------------------------
# writing hand-built events with uproot, in the real Delphes leaf layout

TYPES = {
    "EFlowTrack": {"PT": F32, "Eta": F32, "Phi": F32, "X": F32, "Y": F32, "Z": F32, "PID": np.int32},
    "EFlowPhoton": {"ET": F32, "Eta": F32, "Phi": F32},
    "EFlowNeutralHadron": {"ET": F32, "Eta": F32, "Phi": F32},
    "Electron": {"PT": F32, "Eta": F32, "Phi": F32, "Charge": np.int32},
    "MuonTight": {"PT": F32, "Eta": F32, "Phi": F32, "Charge": np.int32},
    "Jet": {"PT": F32, "Eta": F32, "Phi": F32, "BTag": np.int32},
    "MissingET": {"MET": F32, "Eta": F32, "Phi": F32},
}


def trk(pt, eta, phi, pid=211, x=0.0, y=0.0, z=0.0):
    return {"PT": pt, "Eta": eta, "Phi": phi, "X": x, "Y": y, "Z": z, "PID": pid}


def neutral(et, eta, phi):
    return {"ET": et, "Eta": eta, "Phi": phi}


def lepton(pt, eta, phi, charge):
    return {"PT": pt, "Eta": eta, "Phi": phi, "Charge": charge}


def jet(pt, eta, btag):
    return {"PT": pt, "Eta": eta, "Phi": 0.0, "BTag": btag}


def met(value, phi):
    return [{"MET": value, "Eta": 0.0, "Phi": phi}]


def write_events(path, events: list[dict], skip: tuple[str, ...] = ()) -> str:
    """Write events ({collection: [object dicts]}) as tree Delphes with leaves <Coll>.<Field>."""
    data = {}
    for coll, fields in TYPES.items():
        if coll in skip:
            continue
        counts = np.array([len(e.get(coll, [])) for e in events], dtype=np.int64)
        data[coll] = ak.zip(
            {
                f: ak.unflatten(np.array([o[f] for e in events for o in e.get(coll, [])], dtype=dt), counts)
                for f, dt in fields.items()
            }
        )
    with uproot.recreate(path) as f:
        f.mktree(
            TREE,
            data,
            counter_name=lambda counted: f"{counted}_size",
            field_name=lambda outer, inner: f"{outer}.{inner}" if outer else inner,
        )
    return str(path)


def hand_events() -> list[dict]:
    """Seven events; the features of the four that pass are worked out in the tests below."""
    far_photon, far_neutral = neutral(3.0, -2.5, 0.0), neutral(3.0, 2.5, 0.0)
    e0 = {  # an isolated electron; cone sums, ordering, jet cuts, MT
        "EFlowTrack": [
            trk(40.0, 0.5, 1.0, pid=11),  # the electron's own track
            trk(2.0, 0.6, 1.0, pid=-211, x=0.01, y=0.02, z=3.0),
            trk(0.4, 0.0, 0.0),  # below 0.5: neither in the map nor in the list
            trk(10.0, -1.0, -2.0, pid=321),
        ],
        "EFlowPhoton": [neutral(4.0, 0.5, 1.2), neutral(0.8, 0.5, 1.0), neutral(5.0, 2.0, 3.0)],
        "EFlowNeutralHadron": [neutral(2.0, 0.3, 0.9), neutral(6.0, -2.0, 0.0)],
        "Electron": [lepton(40.0, 0.5, 1.0, -1)],
        "Jet": [jet(50.0, 1.0, 1), jet(25.0, 0.0, 1), jet(100.0, 3.0, 0), jet(35.0, -2.5, 0)],
        "MissingET": met(30.0, -2.0),
    }
    e1 = {  # electron and muon candidates; the first electron is not isolated
        "EFlowTrack": [
            trk(50.0, -1.0, -1.0, pid=-11),
            trk(30.0, -1.1, -1.0),  # 30/50 = 0.6 of charged isolation around the first electron
            trk(60.0, 0.2, 2.0, pid=11),
            trk(35.0, 1.5, -2.5, pid=-13),
        ],
        "EFlowPhoton": [far_photon],
        "EFlowNeutralHadron": [far_neutral],
        "Electron": [lepton(50.0, -1.0, -1.0, 1), lepton(60.0, 0.2, 2.0, -1)],
        "MuonTight": [lepton(35.0, 1.5, -2.5, 1)],
        "MissingET": met(20.0, 0.0),
    }
    e2 = {  # no photon above 1 GeV: an empty map
        "EFlowTrack": [trk(10.0, 0.0, 0.0)],
        "EFlowPhoton": [neutral(0.9, 1.0, 1.0)],
        "EFlowNeutralHadron": [neutral(3.0, 1.0, 1.0)],
        "Electron": [lepton(40.0, -1.0, -1.0, -1)],
        "MissingET": met(10.0, 0.0),
    }
    e3 = {  # no lepton
        "EFlowTrack": [trk(10.0, 0.0, 0.0)],
        "EFlowPhoton": [far_photon],
        "EFlowNeutralHadron": [far_neutral],
        "MissingET": met(10.0, 0.0),
    }
    e4 = {  # a muon of exactly 23 GeV: not a candidate (PT > 23 is required)
        "EFlowTrack": [trk(23.0, 0.0, 0.0, pid=13)],
        "EFlowPhoton": [far_photon],
        "EFlowNeutralHadron": [far_neutral],
        "MuonTight": [lepton(23.0, 0.0, 0.0, -1)],
        "MissingET": met(10.0, 0.0),
    }
    i460, i160, i210 = np.arange(460), np.arange(160), np.arange(210)
    e5 = {  # more tracks, photons and neutral hadrons than the caps, all far from the muon
        "EFlowTrack": [trk(40.0, 2.4, 0.0, pid=13), trk(0.5, 0.0, 0.0)]
        + [trk(1.0 + 0.01 * i, -2.0 + 3.0 * i / 460, -3.0 + 6.0 * i / 460) for i in i460],
        "EFlowPhoton": [neutral(2.0 + 0.01 * i, -2.0 + 3.0 * i / 160, 0.1 * i % 6 - 3) for i in i160],
        "EFlowNeutralHadron": [neutral(3.0 + 0.01 * i, -2.0 + 3.0 * i / 210, 0.1 * i % 6 - 3) for i in i210],
        "MuonTight": [lepton(40.0, 2.4, 0.0, -1)],
        "MissingET": met(10.0, 1.0),
    }
    e6 = {  # phi wrap: a neutral hadron across the +-pi line from the electron
        "EFlowTrack": [trk(40.0, 0.0, 3.1, pid=11), trk(5.0, -2.0, 0.0)],
        "EFlowPhoton": [far_photon],
        "EFlowNeutralHadron": [neutral(8.0, 0.05, -3.1)],
        "Electron": [lepton(40.0, 0.0, 3.1, -1)],
        "MissingET": met(50.0, 0.0),
    }
    return [e0, e1, e2, e3, e4, e5, e6]


def read_output(out) -> dict[tuple[str, int], tuple[int, np.ndarray, np.ndarray]]:
    """(source_file, entry) -> (label, hfeatures, particles as 801 x 19) of an ingestion output in either
    layout, read with pyarrow."""
    table = ds.dataset(str(out), format="parquet", partitioning="hive", exclude_invalid_files=True).to_table()
    hlf = nested_to_numpy(table["hfeatures"], (N_HLF,))
    particles = particles_to_numpy(table["particles"], N_PARTICLES, N_PARTICLE_FEATURES)
    keys = zip(table["source_file"].to_pylist(), table["entry"].to_pylist(), strict=True)
    labels = table["label"].to_pylist()
    return {k: (labels[i], hlf[i], particles[i]) for i, k in enumerate(keys)}


def assert_same_rows(got: dict, want: dict) -> None:
    """Two ingestion outputs (read_output) hold the same events with the same values."""
    assert got.keys() == want.keys()
    for key, (label, hlf, particles) in got.items():
        assert label == want[key][0]
        np.testing.assert_array_equal(hlf, want[key][1])
        np.testing.assert_array_equal(particles, want[key][2])


def inputs_for(files: dict[str, str]) -> list[str]:
    return [f"{name}={url}" for name, url in files.items()]


# ---------------------------------------------------------------------------------------------------
# hand-built events


@pytest.fixture(scope="module")
def hand(tmp_path_factory, spark):
    d = tmp_path_factory.mktemp("hand")
    events = hand_events()
    paths = {
        "qcd": write_events(d / "qcd.root", events),
        "ttbar": write_events(d / "ttbar.root", events[:2]),
        "wjets": write_events(d / "wjets.root", events[5:]),
    }
    out = d / "out"
    ingest.run(inputs_for(paths), str(out), spark=spark, chunk_entries=3)
    return paths, out, read_output(out)


def test_table_is_built_from_the_arrays_without_pandas():
    """to_table builds Arrow arrays from the numpy buffers: the values, an empty batch and a non-ASCII
    source survive, and a fresh worker does not import pandas for it (seconds per Spark worker)."""
    rng = np.random.default_rng(1)
    particles = rng.random((3, N_PARTICLES, N_PARTICLE_FEATURES), F32)
    feats = Features(
        np.array([0, 4, 9]),
        rng.random((3, N_HLF), F32),
        particles,
        np.array([1, 2, 3]),
        np.zeros(4, np.int64),
    )
    table = ingest.to_table(feats, "s3://b/é.root", 100)
    table.validate(full=True)
    assert table.schema == ingest.SCHEMA and table.column("entry").to_pylist() == [100, 104, 109]
    assert table.column("source_file").to_pylist() == ["s3://b/é.root"] * 3
    got = nested_to_numpy(table.column("particles"), (N_PARTICLES, N_PARTICLE_FEATURES))
    np.testing.assert_array_equal(got, particles)
    np.testing.assert_array_equal(nested_to_numpy(table.column("hfeatures"), (N_HLF,)), feats.hlf)
    empty = Features(
        *(a[:0] for a in (feats.entries, feats.hlf, feats.particles, feats.n_particles)), feats.cutflow
    )
    assert ingest.to_table(empty, "x", 0).num_rows == 0
    real = np.arange(N_PARTICLES)[None, :] < feats.n_particles[:, None]
    ragged = ingest.to_table(Features(feats.entries, feats.hlf, particles * real[..., None],
                                      feats.n_particles, feats.cutflow), "f", 0, "ragged")  # fmt: skip
    ragged.validate(full=True)
    assert ragged.schema == ingest.SCHEMAS["ragged"] and ragged.column("particles").to_pylist()[0] == [
        particles[0, 0].tolist()
    ]
    np.testing.assert_array_equal(
        particles_to_numpy(ragged.column("particles"), N_PARTICLES, N_PARTICLE_FEATURES),
        particles * real[..., None],
    )
    code = (
        "import sys, numpy as np; from jobs.ingest import job; from jobs.ingest.features import Features; "
        "job.to_table(Features(np.zeros(1, np.int64), np.zeros((1, 14), np.float32), "
        "np.zeros((1, 801, 19), np.float32), np.ones(1, np.int64), np.zeros(4, np.int64)), 'f', 0); "
        "assert 'pandas' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hand_cutflow_and_labels(hand):
    paths, out, rows = hand
    summary = json.loads((out / "_summary.json").read_text())
    qcd = summary["classes"]["qcd"]
    assert qcd["events_passing"] == {"read": 7, "nonempty_maps": 6, "has_lepton": 5, "isolated_lepton": 4}
    assert qcd["events_written"] == 4 and qcd["label"] == 0 and qcd["sample"] == SAMPLES["qcd"]
    assert summary["classes"]["ttbar"]["events_written"] == 2
    assert summary["classes"]["wjets"]["events_written"] == 2
    assert sorted(e for (f, e) in rows if f == paths["qcd"]) == [0, 1, 5, 6]
    assert {rows[(paths[n], 0)][0] for n in CLASSES} == {0, 1, 2}
    assert sorted(os.listdir(out)) == [
        "_COLLIDERFLOW",
        "_SUCCESS",
        "_metrics.json",
        "_summary.json",
        "label=0",
        "label=1",
        "label=2",
    ]
    metrics = json.loads((out / "_metrics.json").read_text())
    assert metrics["stage"] == "ingest" and metrics["events"] == 7 + 2 + 2
    assert metrics["events_written"] == 8
    for url in paths.values():
        assert metrics["files"][url]["bytes_read"] > 0 and metrics["files"][url]["read_calls"] > 0


def test_spark_reads_the_contract(hand, spark):
    paths, out, rows = hand
    df = spark.read.parquet(str(out))
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    assert types == {
        "hfeatures": "array<float>",
        "particles": "array<array<float>>",
        "source_file": "string",
        "entry": "bigint",
        "label": "int",
    }
    got = df.where((df.source_file == paths["qcd"]) & (df.entry == 5)).collect()
    assert len(got) == 1 and got[0]["label"] == 0 and df.count() == len(rows) == 8
    real = np.array(got[0]["particles"], F32)  # the ragged layout: the event's real rows only
    padded = rows[(paths["qcd"], 5)][2]
    assert not padded[len(real) :].any() and min(len(r["particles"]) for r in df.collect()) < N_PARTICLES
    np.testing.assert_array_equal(real, padded[: len(real)])
    np.testing.assert_array_equal(np.array(got[0]["hfeatures"], F32), rows[(paths["qcd"], 5)][1])


def test_hand_isolated_electron(hand):
    paths, _, rows = hand
    _, hlf, p = rows[(paths["qcd"], 0)]
    # lepton cone: tracks 40 (itself) + 2, photon 4, neutral hadron 2 -> (42/40 - 1, 4/40, 2/40)
    mt = 2 * 30.0 * 40.0 * (1 - math.cos(1.0 - (-2.0)))
    expected_hlf = [85.0, 30.0, -2.0, mt, 2, 1, 40.0, 0.5, 1.0, 0.05, 0.1, 0.05, -1.0, 1.0]
    np.testing.assert_allclose(hlf, expected_hlf, rtol=2e-6, atol=1e-6)
    row0 = [40 * math.cosh(0.5), 40 * math.cos(1.0), 40 * math.sin(1.0), 40 * math.sinh(0.5), 40.0, 0.5, 1.0]
    row0 += [0, 0, 0, 0.05, 0.1, 0.05, 0, 0, 0, 1, 0, -1]
    np.testing.assert_allclose(p[0], row0, rtol=2e-6, atol=1e-6)
    # order: lepton, tracks (its own and the 0.4 GeV one left out), photons (>1 GeV), neutral hadrons
    np.testing.assert_allclose(p[:8, C["Pt"]], [40, 2, 10, 4, 5, 2, 6, 0], rtol=1e-6)
    np.testing.assert_array_equal(p[1:7, C["isChHad"]], [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(p[1:7, C["isGamma"]], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(p[1:7, C["isNeuHad"]], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(p[1:7, C["Charge"]], [-1, 1, 0, 0, 0, 0])  # sign(PID)
    np.testing.assert_allclose(p[1, C["vtxX"] : C["vtxZ"] + 1], [0.01, 0.02, 3.0], rtol=1e-6)
    assert not p[3:, C["vtxX"] : C["vtxZ"] + 1].any()
    # the 2 GeV track: charged (40 + 2)/2 - 1, photon 4/2, the neutral hadron is at dR^2 = 0.1
    np.testing.assert_allclose(p[1, ISO], [20.0, 2.0, 0.0], rtol=1e-6)
    # the 4 GeV photon: tracks 40 + 2 -> 42/4 - 1 (charged map always subtracts 1), itself 4/4
    np.testing.assert_allclose(p[3, ISO], [9.5, 1.0, 0.0], rtol=1e-6)
    # the 2 GeV neutral hadron: the lepton track only (0.05 away) -> 40/2 - 1; itself 2/2
    np.testing.assert_allclose(p[5, ISO], [19.0, 0.0, 1.0], rtol=1e-6)
    assert not p[7:].any()  # padding: exact zeros after the real rows


def test_hand_lepton_choice_and_caps(hand):
    paths, _, rows = hand
    _, hlf, p = rows[(paths["qcd"], 1)]
    # first electron fails isolation (0.6); the second electron (eta 0.2) and the muon (eta 1.5) are
    # both isolated: the reference keeps the larger eta, the muon
    assert hlf[H["LepIsEle"]] == 0 and hlf[H["LepPt"]] == 35.0 and hlf[H["LepCharge"]] == 1
    assert (hlf[H["HT"]], hlf[H["nJets"]], hlf[H["nBjets"]]) == (0, 0, 0)
    np.testing.assert_array_equal(p[:6, C["Pt"]], [35, 50, 30, 60, 3, 3])  # muon track left out
    assert p[0, C["isMu"]] == 1 and p[0, C["isEle"]] == 0
    _, hlf, p = rows[(paths["qcd"], 5)]
    assert hlf[H["LepPt"]] == 40.0 and p[0, C["isMu"]] == 1
    n_rows = [int(p[:, C[f]].sum()) for f in ("isChHad", "isGamma", "isNeuHad")]
    assert n_rows == [450, 150, 200] and (np.abs(p).sum(axis=1) > 0).all()
    # the first 450 tracks above 0.5 GeV in file order, then the first 150 photons, 200 neutral hadrons
    np.testing.assert_allclose(p[1:451, C["Pt"]], 1.0 + 0.01 * np.arange(450), rtol=1e-6)
    np.testing.assert_allclose(p[451:601, C["Pt"]], 2.0 + 0.01 * np.arange(150), rtol=1e-6)
    np.testing.assert_allclose(p[601:801, C["Pt"]], 3.0 + 0.01 * np.arange(200), rtol=1e-6)


def test_hand_reference_phi_wrap(hand):
    paths, _, rows = hand
    _, hlf, p = rows[(paths["wjets"], 1)]
    # dphi = -3.1 - 3.1 = -6.2 is not < -2pi: the neutral hadron is outside the reference cone
    assert hlf[H["LepIsoNeu"]] == 0 and p[0, C["NeuPFIso"]] == 0
    assert p[3, C["isNeuHad"]] == 1 and p[3, C["ChPFIso"]] == -1.0  # no track in its cone: 0/8 - 1
    np.testing.assert_allclose(hlf[H["MT"]], 2 * 50 * 40 * (1 - math.cos(3.1)), rtol=1e-6)


def _hand_arrays(paths):
    with uproot.open(paths["qcd"]) as f:
        return f[TREE].arrays(list(BRANCHES))


def test_hand_switches(hand):
    paths, _, _ = hand
    arrays = _hand_arrays(paths)
    ref = compute(arrays)
    wrap = compute(arrays, Options(physical_phi_wrap=True))
    i6 = list(ref.entries).index(6)
    # physical wrap: dphi = 0.083, dR^2 = 0.0094 -> 8/40 around the electron; 40/8 - 1 around the hadron
    assert wrap.hlf[i6, H["LepIsoNeu"]] == pytest.approx(0.2)
    assert wrap.particles[i6, 3, C["ChPFIso"]] == pytest.approx(4.0)
    mt = compute(arrays, Options(mt_sqrt=True))
    np.testing.assert_allclose(mt.hlf[:, H["MT"]], np.sqrt(ref.hlf[:, H["MT"]]), rtol=1e-6)
    pt = compute(arrays, Options(lepton_choice="pt"))
    i1 = list(ref.entries).index(1)
    assert pt.hlf[i1, H["LepIsEle"]] == 1 and pt.hlf[i1, H["LepPt"]] == 60.0
    np.testing.assert_array_equal(pt.particles[i1, :6, C["Pt"]], [60, 50, 30, 35, 3, 3])


def test_cli_flags_reach_the_job(hand, tmp_path, spark):
    paths, _, _ = hand
    out = tmp_path / "flags"
    argv = [
        *sum((["--input", i] for i in inputs_for(paths)), []),
        "--output",
        str(out),
        "--master",
        "local[1]",
    ]
    argv += ["--physical-phi-wrap", "--mt-sqrt", "--lepton-choice", "pt", "--chunk-entries", "4"]
    assert cli.run(ingest.main, argv) == 0
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["options"] == {
        "physical_phi_wrap": True, "mt_sqrt": True, "lepton_choice": "pt", "muon_branch": "MuonTight",
    }  # fmt: skip
    rows = read_output(out)
    _, hlf, _ = rows[(paths["qcd"], 1)]
    assert hlf[H["LepIsEle"]] == 1
    _, hlf, _ = rows[(paths["qcd"], 6)]
    assert hlf[H["LepIsoNeu"]] == pytest.approx(0.2)
    np.testing.assert_allclose(hlf[H["MT"]], math.sqrt(2 * 50 * 40 * (1 - math.cos(3.1))), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# generated samples: the oracle, the task split, the switches


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen") / "delphes"
    generate(events=2000, output=str(d), files=2, seed=2026)
    return {name: str(d / SAMPLES[name]) for name in CLASSES}


@pytest.fixture(scope="module")
def many_tasks(generated, tmp_path_factory, spark):
    out = tmp_path_factory.mktemp("many") / "out"
    ingest.run(inputs_for(generated), str(out), spark=spark, chunk_entries=350, batch_entries=200)
    return out


@pytest.mark.slow
def test_equals_oracle_for_every_event(generated, many_tasks):
    rows = read_output(many_tasks)
    summary = json.loads((many_tasks / "_summary.json").read_text())
    n_checked = 0
    for name, directory in generated.items():
        flow = dict.fromkeys(CUTS, 0)
        for path in sorted(os.path.join(directory, f) for f in os.listdir(directory)):
            with uproot.open(path) as f:
                arrays = f[TREE].arrays(list(BRANCHES))
            for entry, event in enumerate(events_as_dicts(arrays)):
                last, hlf, particles = oracle_event(event)
                for cut in CUTS[: CUTS.index(last) + 1]:
                    flow[cut] += 1
                key = (path, entry)
                if hlf is None:
                    assert key not in rows, key
                    continue
                label, got_hlf, got_particles = rows[key]
                assert label == LABELS[name]
                np.testing.assert_allclose(got_hlf, np.float32(hlf), rtol=1e-6, atol=1e-6, err_msg=str(key))
                np.testing.assert_allclose(
                    got_particles, particles.astype(F32), rtol=1e-6, atol=1e-6, err_msg=str(key)
                )
                n_checked += 1
        assert flow["read"] == 2000
        assert summary["classes"][name]["events_passing"] == flow
    assert n_checked == len(rows) > 2000


def test_worker_processes_write_what_spark_writes(generated, many_tasks, tmp_path):
    """The engine seam: the same plan on worker processes (no JVM) gives the same rows and summary as
    on Spark, and the metrics say which engine ran it."""
    out = tmp_path / "processes"
    metrics = ingest.run(
        inputs_for(generated), str(out), engine="processes", master="local[2]", chunk_entries=350,
        batch_entries=200,
    )  # fmt: skip
    assert metrics["spark"]["engine"] == "processes" and metrics["spark"]["workers"] == 2
    assert_same_rows(read_output(out), read_output(many_tasks))
    assert json.loads((out / "_summary.json").read_text()) == json.loads(
        (many_tasks / "_summary.json").read_text()
    )
    assert sorted(os.listdir(out / "label=1")) == sorted(os.listdir(many_tasks / "label=1"))


def test_padded_layout_holds_the_same_events_and_prepares_the_same(generated, many_tasks, tmp_path):
    """--layout padded (the reference's 801 x 19) and the default ragged layout hold the same events,
    and jobs.prepare makes the same prepared set from either, ragged files a fraction of the bytes."""
    from jobs.prepare import job as prepare

    out = tmp_path / "padded"
    ingest.run(inputs_for(generated), str(out), engine="processes", master="local[2]", chunk_entries=350,
               batch_entries=200, layout="padded")  # fmt: skip
    assert json.loads((out / "_summary.json").read_text())["particle_layout"] == "padded"
    assert json.loads((many_tasks / "_summary.json").read_text())["particle_layout"] == "ragged"
    assert_same_rows(read_output(out), read_output(many_tasks))
    size = {d: sum(f.stat().st_size for f in d.rglob("*.parquet")) for d in (out, many_tasks)}
    assert size[many_tasks] < size[out]
    prepared = {}
    for d in (out, many_tasks):
        prepared[d] = tmp_path / f"prepared-{d.name}"
        prepare.run(str(d), str(prepared[d]), engine="processes", master="local[2]", shuffle_partitions=2)
    files = {
        d: sorted(p.relative_to(p_dir) for p in p_dir.rglob("*.parquet")) for d, p_dir in prepared.items()
    }
    assert files[out] == files[many_tasks] and files[out]
    for rel in files[out]:
        assert pq.read_table(prepared[out] / rel).equals(pq.read_table(prepared[many_tasks] / rel)), rel


def test_one_task_equals_many(generated, many_tasks, tmp_path, spark):
    out = tmp_path / "one"
    ingest.run(inputs_for(generated), str(out), spark=spark, chunk_entries=10_000, partitions=1)
    assert_same_rows(read_output(out), read_output(many_tasks))
    assert (
        json.loads((out / "_summary.json").read_text())["classes"]
        == json.loads((many_tasks / "_summary.json").read_text())["classes"]
    )
    assert len(os.listdir(out / "label=1")) == 2 < len(os.listdir(many_tasks / "label=1"))


def _compute_file(path: str, options: Options):
    with uproot.open(path) as f:
        arrays = f[TREE].arrays(list(BRANCHES))
    return arrays, compute(arrays, options)


def _first_file(directory: str) -> str:
    return os.path.join(directory, sorted(os.listdir(directory))[0])


@pytest.mark.parametrize("name", CLASSES)
def test_switches_match_the_oracle(generated, name):
    options = Options(physical_phi_wrap=True, mt_sqrt=True, lepton_choice="pt")
    arrays, got = _compute_file(_first_file(generated[name]), options)
    arrays = arrays[:400]
    expected = [oracle_event(e, True, True, "pt") for e in events_as_dicts(arrays)]
    passing = [i for i, (_, h, _) in enumerate(expected) if h is not None]
    k = int(np.searchsorted(got.entries, 400))
    assert got.entries[:k].tolist() == passing
    np.testing.assert_allclose(
        got.hlf[:k], np.array([expected[i][1] for i in passing], F32), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        got.particles[:k], np.array([expected[i][2] for i in passing], F32), rtol=1e-6, atol=1e-6
    )


def test_each_switch_changes_only_its_own_features(generated):
    path = _first_file(generated["ttbar"])
    _, ref = _compute_file(path, Options())
    # MT as the square root: only the MT column changes, to the square root of the reference value
    _, mt = _compute_file(path, Options(mt_sqrt=True))
    np.testing.assert_array_equal(mt.entries, ref.entries)
    np.testing.assert_array_equal(np.delete(mt.hlf, H["MT"], axis=1), np.delete(ref.hlf, H["MT"], axis=1))
    np.testing.assert_array_equal(mt.particles, ref.particles)
    np.testing.assert_allclose(mt.hlf[:, H["MT"]], np.sqrt(ref.hlf[:, H["MT"]]), rtol=1e-6)
    # lepton choice by pT: the same events pass; where the choice differs the lepton has the larger pT
    _, pt = _compute_file(path, Options(lepton_choice="pt"))
    np.testing.assert_array_equal(pt.entries, ref.entries)
    lep = [H[k] for k in ("LepPt", "LepEta", "LepPhi", "LepIsoCh", "LepIsoGamma", "LepIsoNeu", "LepCharge")]
    changed = (pt.hlf != ref.hlf).any(axis=1)
    assert 0 < changed.sum() < 0.2 * changed.size
    assert (pt.hlf[changed, H["LepIsEle"]] != ref.hlf[changed, H["LepIsEle"]]).all()
    assert (pt.hlf[changed, H["LepPt"]] > ref.hlf[changed, H["LepPt"]]).all()
    assert (pt.hlf[changed, H["LepEta"]] < ref.hlf[changed, H["LepEta"]]).all()
    event_level = [i for i in range(N_HLF) if i not in lep + [H["LepIsEle"], H["MT"]]]
    np.testing.assert_array_equal(pt.hlf[:, event_level], ref.hlf[:, event_level])
    np.testing.assert_array_equal(pt.hlf[~changed], ref.hlf[~changed])
    np.testing.assert_array_equal(pt.particles[~changed], ref.particles[~changed])
    # physical phi wrap: for events whose lepton is unchanged only isolation values (and what the
    # lepton's isolation feeds) change, and some do
    _, wrap = _compute_file(path, Options(physical_phi_wrap=True))
    common, i_ref, i_wrap = np.intersect1d(ref.entries, wrap.entries, return_indices=True)
    assert common.size > 0.9 * ref.entries.size
    r_p, w_p = ref.particles[i_ref], wrap.particles[i_wrap]
    same_lepton = (r_p[:, 0, : C["Phi"] + 1] == w_p[:, 0, : C["Phi"] + 1]).all(axis=1)
    not_iso = [i for i in range(N_PARTICLE_FEATURES) if i not in ISO]
    np.testing.assert_array_equal(r_p[same_lepton][..., not_iso], w_p[same_lepton][..., not_iso])
    assert (r_p[same_lepton][..., ISO] != w_p[same_lepton][..., ISO]).any()
    iso_hlf = [H["LepIsoCh"], H["LepIsoGamma"], H["LepIsoNeu"]]
    other_hlf = [i for i in range(N_HLF) if i not in iso_hlf]
    np.testing.assert_array_equal(
        ref.hlf[i_ref][same_lepton][:, other_hlf], wrap.hlf[i_wrap][same_lepton][:, other_hlf]
    )


# ---------------------------------------------------------------------------------------------------
# bad input


@pytest.fixture()
def good_files(tmp_path):
    events = hand_events()
    return {n: write_events(tmp_path / f"{n}.root", events) for n in CLASSES}


def _expect_error(inputs, out, match, spark, **kw):
    with pytest.raises((BadInputError, UsageError), match=match):
        ingest.run(inputs, str(out), spark=spark, **kw)
    assert not out.exists()


def test_missing_branch_names_file_and_leaf(good_files, tmp_path, spark):
    bad = write_events(tmp_path / "nomuon.root", hand_events(), skip=("MuonTight",))
    files = {**good_files, "wjets": bad}
    _expect_error(inputs_for(files), tmp_path / "o", r"nomuon\.root.*lacks collection\(s\) MuonTight;", spark)


def test_real_delphes_file_without_leptons_is_named(good_files, tmp_path, spark, testdata):
    # a real Delphes file (split TClonesArray branches) read through the same leaf names
    real = testdata("uproot-issue513.root")
    files = {**good_files, "qcd": real}
    with pytest.raises(BadInputError) as err:
        ingest.run(inputs_for(files), str(tmp_path / "o"), spark=spark)
    assert real in str(err.value) and "lacks collection(s) Electron, MuonTight, MissingET;" in str(err.value)
    assert "EFlowTrack" not in err.value.problem.split("lacks")[1].split(";")[0]


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_unreadable_file_is_named(good_files, tmp_path, spark, kind):
    path = tmp_path / f"{kind}.root"
    if kind == "garbage":
        path.write_bytes(b"this is not a ROOT file" * 100)
    elif kind == "truncated":
        data = open(good_files["qcd"], "rb").read()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    files = {**good_files, "ttbar": str(path)}
    _expect_error(inputs_for(files), tmp_path / "o", rf"{kind}\.root", spark)


def test_class_without_files_and_unknown_class(good_files, tmp_path, spark):
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    files = {**good_files, "wjets": str(empty)}
    _expect_error(inputs_for(files), tmp_path / "o", r"empty_dir.*no \.root file", spark)
    _expect_error(inputs_for({"qcd": good_files["qcd"]}), tmp_path / "o", r"ttbar.*wjets", spark)
    bad_name = [*inputs_for(good_files), f"zjets={good_files['qcd']}"]
    _expect_error(bad_name, tmp_path / "o", r"unknown class 'zjets'", spark)
    _expect_error(["qcd"], tmp_path / "o", r"expected CLASS=URL", spark)


def test_cli_exit_code_and_message(good_files, tmp_path, capsys):
    argv = ["--input", f"higgs={good_files['qcd']}", "--output", str(tmp_path / "o")]
    assert cli.run(ingest.main, argv) == 2
    assert "unknown class 'higgs'" in capsys.readouterr().err


def _corrupt_middle(src: str, dst) -> str:
    """A copy whose middle third is overwritten: the header opens, reading entries fails."""
    data = bytearray(open(src, "rb").read())
    third = len(data) // 3
    data[third : 2 * third] = b"\x5a" * third
    dst.write_bytes(bytes(data))
    return str(dst)


def test_on_bad_file_skip_drops_the_whole_file(generated, good_files, tmp_path, spark):
    d = tmp_path / "wjets"
    d.mkdir()
    files = sorted(os.listdir(generated["wjets"]))
    good = shutil.copy(os.path.join(generated["wjets"], files[0]), d / files[0])
    bad = _corrupt_middle(os.path.join(generated["wjets"], files[1]), d / "z_corrupt.root")
    inputs = inputs_for({**good_files, "wjets": str(d)})
    with pytest.raises(BadInputError, match="z_corrupt.root"):
        ingest.run(inputs, str(tmp_path / "fail"), spark=spark, chunk_entries=250)
    assert not (tmp_path / "fail").exists()
    out = tmp_path / "skip"
    ingest.run(inputs, str(out), spark=spark, chunk_entries=250, on_bad_file="skip")
    summary = json.loads((out / "_summary.json").read_text())
    assert [s["url"] for s in summary["skipped_files"]] == [bad]
    assert summary["classes"]["wjets"]["skipped_files"] == 1
    rows = read_output(out)
    assert not [k for k in rows if k[0] == bad]
    parts = [f for _, _, fs in os.walk(out) for f in fs if f.startswith("part-")]
    assert parts and all(f.endswith(".parquet") and "-00001-" not in f for f in parts if "Wlnu" in f)
    wjets = [k for k in rows if rows[k][0] == LABELS["wjets"]]
    assert {k[0] for k in wjets} == {str(good)}
    assert summary["classes"]["wjets"]["events_written"] == len(wjets)
    assert summary["classes"]["wjets"]["events_read"] == 1000
    metrics = json.loads((out / "_metrics.json").read_text())
    assert metrics["skipped_files"][0]["url"] == bad


def test_rerun_replaces_the_output(good_files, tmp_path, spark):
    out = tmp_path / "o"
    ingest.run(inputs_for(good_files), str(out), spark=spark)
    (out / "stale.txt").write_text("old")
    ingest.run(inputs_for(good_files), str(out), spark=spark, subset="0/1")
    assert not (out / "stale.txt").exists() and (out / "_summary.json").exists()


# ---------------------------------------------------------------------------------------------------
# Delphes card variants: the tight muons are "MuonTight" (reference card) or "Muon" (standard cards)


def by_file_name(rows: dict) -> dict:
    return {(os.path.basename(src), entry): v for (src, entry), v in rows.items()}


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    d = tmp_path_factory.mktemp("cards")
    for card in ("MuonTight", "Muon"):
        generate(events=300, output=str(d / card), files=1, seed=7, muon_branch=card)
    return {card: {n: str(d / card / SAMPLES[n]) for n in CLASSES} for card in ("MuonTight", "Muon")}


@pytest.fixture(scope="module")
def card_outputs(cards, tmp_path_factory, spark):
    d = tmp_path_factory.mktemp("card-outputs")
    for card, files in cards.items():
        ingest.run(inputs_for(files), str(d / card), spark=spark)
    return {card: d / card for card in cards}


def test_standard_card_muons_give_the_same_features(cards, card_outputs):
    with uproot.open(glob_one(cards["Muon"]["wjets"])) as f:
        keys = set(f[TREE].keys())
    assert "Muon.PT" in keys and "MuonTight.PT" not in keys  # the standard card's names
    for card, out in card_outputs.items():
        summary = json.loads((out / "_summary.json").read_text())
        assert summary["options"]["muon_branch"] == card  # the default found the file's collection
    reference, standard = (by_file_name(read_output(card_outputs[c])) for c in ("MuonTight", "Muon"))
    assert reference.keys() == standard.keys() and len(reference) > 100
    muons = [k for k, v in standard.items() if v[1][H["LepIsEle"]] == 0]
    assert len(muons) > 30  # muon events, selected from the Muon collection
    for key, (label, hlf, particles) in standard.items():
        assert label == reference[key][0]
        np.testing.assert_array_equal(hlf, reference[key][1])
        np.testing.assert_array_equal(particles, reference[key][2])


def test_muon_branch_option_and_its_error(cards, tmp_path, spark, capsys):
    out = tmp_path / "explicit"
    ingest.run(inputs_for(cards["Muon"]), str(out), spark=spark, muon_branch="Muon")
    assert json.loads((out / "_summary.json").read_text())["options"]["muon_branch"] == "Muon"
    argv = [*sum((["--input", i] for i in inputs_for(cards["Muon"])), []), "--output", str(tmp_path / "o")]
    assert cli.run(ingest.main, [*argv, "--muon-branch", "MuonTight"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 500 and "Traceback" not in err
    assert glob_one(cards["Muon"]["qcd"]) in err  # the first file of the first class
    assert "lacks collection(s) MuonTight;" in err and "near matches in the file: Muon" in err
    assert "expected the Delphes collections" in err
    assert not (tmp_path / "o").exists()


def test_missing_collections_error_is_short(good_files, tmp_path, spark, testdata):
    """A real Delphes file (292 branches) without leptons: the missing leaves, the expected
    collections and the near matches, not every branch of the file."""
    real = testdata("uproot-issue513.root")
    with pytest.raises(BadInputError) as err:
        ingest.run(inputs_for({**good_files, "qcd": real}), str(tmp_path / "o"), spark=spark)
    message = str(err.value)
    assert len(message) < 500 and "\n" not in message
    assert real in message and "lacks collection(s) Electron, MuonTight, MissingET;" in message
    assert "expected the Delphes collections EFlowTrack" in message and "near matches in the file:" in message
    assert "Particle" not in message  # a collection nothing asked for


def glob_one(directory: str) -> str:
    (path,) = (os.path.join(directory, f) for f in os.listdir(directory))
    return path


def test_rntuple_input_gives_the_same_dataset(cards, card_outputs, tmp_path, spark):
    """The same Delphes events as RNTuples (collections of records: 'Jet' with subfield 'PT'): the
    same rows, features and cut-flow as from the TTrees."""
    files = {}
    for name, directory in cards["MuonTight"].items():
        src = glob_one(directory)
        (tmp_path / name).mkdir()
        files[name] = tree_to_rntuple(src, str(tmp_path / name / os.path.basename(src)), TREE, BRANCHES)
    out = tmp_path / "out"
    ingest.run(inputs_for(files), str(out), spark=spark, chunk_entries=120, batch_entries=50)
    got, want = (by_file_name(read_output(o)) for o in (out, card_outputs["MuonTight"]))
    assert got.keys() == want.keys() and len(got) > 100
    for key, (label, hlf, particles) in got.items():
        assert label == want[key][0]
        np.testing.assert_array_equal(hlf, want[key][1])
        np.testing.assert_array_equal(particles, want[key][2])
    summaries = [json.loads((o / "_summary.json").read_text()) for o in (out, card_outputs["MuonTight"])]
    assert summaries[0]["classes"] == summaries[1]["classes"]


# ---------------------------------------------------------------------------------------------------
# root:// (XRootD) inputs


def assert_same_features(remote: dict, remote_dir, local: dict, local_dir) -> None:
    """Two runs over the same events (the files under other URLs): every event's label, HLF and
    particles equal, matched by (file name, entry); the per-class summaries equal."""

    def by_name(rows: dict) -> dict:
        return {(os.path.basename(url), entry): v for (url, entry), v in rows.items()}

    remote, local = by_name(remote), by_name(local)
    assert remote.keys() == local.keys() and len(local) > 2000
    for key, (label, hlf, particles) in local.items():
        assert remote[key][0] == label
        np.testing.assert_array_equal(remote[key][1], hlf)
        np.testing.assert_array_equal(remote[key][2], particles)
    summaries = [json.loads((d / "_summary.json").read_text()) for d in (remote_dir, local_dir)]
    assert summaries[0]["classes"] == summaries[1]["classes"]


def test_root_inputs_equal_local(generated, many_tasks, xrootd_server, tmp_path, spark):
    """The generated samples served by a real XRootD server, each class given as a root:// directory:
    the same features row for row as the local run, and the same summary."""
    served = {
        name: xrootd_server.put(local, f"ingest/{tmp_path.name}/{os.path.basename(local)}")
        for name, local in generated.items()
    }
    out = tmp_path / "root"
    ingest.run(inputs_for(served), str(out), spark=spark, chunk_entries=350, batch_entries=200)
    remote, local = read_output(out), read_output(many_tasks)

    assert {url for url, _ in remote} <= {
        f"{served[n]}/{f}" for n in CLASSES for f in os.listdir(generated[n])
    }
    assert_same_features(remote, out, local, many_tasks)


# ---------------------------------------------------------------------------------------------------
# on a cluster without a shared disk


@pytest.mark.slow
@pytest.mark.deep  # tests/dags/test_on_cluster.py runs this stage on the cluster in CI
def test_on_the_cluster_from_s3_equals_local(generated, many_tasks, spark_cluster, s3_env, bucket, tmp_path):
    """The command line as a driver in its own namespace, `--master spark://` with two workers that
    share no disk with it or each other, s3:// in and out (executors write their parts into the
    store): the local run's features row for row, and its summary."""
    from bench.fixtures.cluster import run_driver
    from jobs.core import storage
    from tests.core.test_storage import download

    fs, _ = storage.filesystem(f"s3://{bucket}")
    inputs = []
    for name, local in generated.items():
        fs.put(f"{local}/", f"{bucket}/in/{os.path.basename(local)}/", recursive=True)
        inputs += ["--input", f"{name}=s3://{bucket}/in/{os.path.basename(local)}"]
    url = f"s3://{bucket}/out/features"
    args = ["jobs.ingest", *inputs, "--output", url, "--chunk-entries", "350", "--batch-entries", "200"]
    done = run_driver([*args, "--master", spark_cluster.master_url], env=s3_env)
    assert done.returncode == 0, done.stderr[-3000:] + spark_cluster.logs()
    out = download(url, tmp_path / "remote")

    remote, local = read_output(out), read_output(many_tasks)
    assert all(u.startswith(f"s3://{bucket}/in/") for u, _ in remote)
    assert_same_features(remote, out, local, many_tasks)
