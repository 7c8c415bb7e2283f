"""The Delphes-style generator: real Delphes leaf layout, determinism, and the physics shape per class
(measured by running the reference algorithm on what it writes)."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from jobs.dltrigger_schema import CLASSES, HLF_NAMES, PARTICLE_FEATURES, SAMPLES, TREE
from jobs.generate import job as generate_cli
from jobs.generate.delphes import generate
from jobs.ingest.features import BRANCHES, MAX_NEUTRALS, MAX_PHOTONS, MAX_TRACKS, compute

H = {n: i for i, n in enumerate(HLF_NAMES)}
C = {n: i for i, n in enumerate(PARTICLE_FEATURES)}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("delphes") / "gen"
    generate(events=3000, output=str(out), files=2, seed=11)
    return out


def _read(path, **kw):
    with uproot.open(path) as f:
        return f[TREE].arrays(list(BRANCHES), library="ak", **kw)


def test_layout_is_real_delphes(sample):
    for name in CLASSES:
        sample_name = SAMPLES[name]
        files = sorted((sample / sample_name).glob("*.root"))
        assert [f.name for f in files] == [f"{sample_name}_0000.root", f"{sample_name}_0001.root"]
        entries = 0
        for path in files:
            with uproot.open(path) as f:
                tree = f[TREE]
                keys = set(tree.keys())
                entries += tree.num_entries
        assert set(BRANCHES) <= keys
        for coll in ("EFlowTrack", "EFlowPhoton", "EFlowNeutralHadron", "Electron", "MuonTight", "Jet"):
            assert f"{coll}_size" in keys
        assert entries == 3000
    with uproot.open(sample / SAMPLES["ttbar"] / f"{SAMPLES['ttbar']}_0000.root") as f:
        tree = f[TREE]
        sizes = tree["EFlowTrack_size"].array(library="np")
        pts = tree["EFlowTrack.PT"].array()
        met = tree["MissingET.MET"].array()
    np.testing.assert_array_equal(sizes, np.asarray([len(x) for x in pts]))
    assert set(np.unique([len(x) for x in met])) == {1}


def test_deterministic_for_a_seed(tmp_path):
    generate(events=40, output=str(tmp_path / "a"), seed=5)
    generate(events=40, output=str(tmp_path / "b"), seed=5)
    generate(events=40, output=str(tmp_path / "c"), seed=6)
    rel = f"{SAMPLES['wjets']}/{SAMPLES['wjets']}_0000.root"
    a, b, c = (_read(tmp_path / d / rel) for d in "abc")
    for field in BRANCHES:
        assert a[field].tolist() == b[field].tolist(), field
    assert a["EFlowTrack.PT"].tolist() != c["EFlowTrack.PT"].tolist()


def test_cli_writes_per_class_sets(tmp_path):
    assert (
        generate_cli.main(["delphes", "--events", "7", "--output", str(tmp_path / "g"), "--files", "2"]) == 0
    )
    for name in CLASSES:
        files = sorted((tmp_path / "g" / SAMPLES[name]).glob("*.root"))
        assert sum(uproot.open(f)[TREE].num_entries for f in files) == 7


def test_physics_shape(sample):
    out = {}
    for name in CLASSES:
        arrays = _read(sample / SAMPLES[name] / f"{SAMPLES[name]}_0000.root")
        out[name] = compute(arrays)
    eff = {n: f.cutflow[-1] / f.cutflow[0] for n, f in out.items()}
    # every cut removes something; QCD leptons mostly fail isolation, signal leptons mostly pass
    for f in out.values():
        assert (np.diff(f.cutflow) < 0).all(), f.cutflow
    assert eff["qcd"] < 0.5 * min(eff["ttbar"], eff["wjets"])
    assert min(eff["ttbar"], eff["wjets"]) > 0.5
    mean = {n: f.hlf.mean(axis=0) for n, f in out.items()}
    # tt-bar: >= 4 jets, b-tags, large HT; W+jets: few jets; QCD: small MET
    assert mean["ttbar"][H["nJets"]] > 3.5 and mean["wjets"][H["nJets"]] < 1.5
    assert mean["ttbar"][H["nBjets"]] > 1.0 > 5 * mean["wjets"][H["nBjets"]]
    assert mean["ttbar"][H["HT"]] > 2 * mean["qcd"][H["HT"]] > 2 * mean["wjets"][H["HT"]]
    assert mean["wjets"][H["MET"]] > 2 * mean["qcd"][H["MET"]]
    # W+jets: Jacobian peak of the lepton pT near m_W/2, transverse mass below and near m_W
    w = out["wjets"].hlf
    lep_pt_mode = np.argmax(np.histogram(w[:, H["LepPt"]], bins=np.arange(20, 80, 4))[0]) * 4 + 22
    assert 30 <= lep_pt_mode <= 46
    mt = np.sqrt(w[:, H["MT"]])
    assert 55 < np.median(mt) < 85 and np.mean(mt < 100) > 0.85
    # multiplicities like a detector: the caps are sometimes reached, mostly not
    p = out["ttbar"].particles
    for flag, cap in (("isChHad", MAX_TRACKS), ("isGamma", MAX_PHOTONS), ("isNeuHad", MAX_NEUTRALS)):
        at_cap = np.mean(p[:, :, C[flag]].sum(axis=1) == cap)
        assert 0 < at_cap < 0.2, (flag, at_cap)
