"""The di-muon job on real CMS open-data files (scikit-hep-testdata) and on generated NanoAOD samples,
through a real local Spark session."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot

from jobs.core.errors import BadInputError
from jobs.dimuon import job as dimuon
from jobs.dimuon.selection import SCHEMA_BRANCHES, select_p4, select_pairs
from tests.jobs.rntuple_fixture import tree_to_rntuple

ZMUMU_FILES = [
    "uproot-Zmumu.root",
    "uproot-Zmumu-zlib.root",
    "uproot-Zmumu-lz4.root",
    "uproot-Zmumu-lzma.root",
    "uproot-Zmumu-zstd.root",
    "uproot-Zmumu-uncompressed.root",
]


def read_hist(path: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    h = uproot.open(path)[name]
    return h.values(flow=False), h.axis().edges()


def cutflow(out: str) -> dict[str, int]:
    with open(os.path.join(out, "cutflow.json")) as f:
        return {c["cut"]: c["events"] for c in json.load(f)["cuts"]}


@pytest.mark.parametrize("name", ZMUMU_FILES)
def test_zmumu_pair_mass_equals_stored_M(testdata, name):
    """The flat per-pair layout: our (E, p) sum reproduces the stored pair mass M in every compression."""
    arrays = uproot.open(testdata(name))["events"].arrays([*SCHEMA_BRANCHES["pairs"], "M"])
    sel = select_pairs(arrays)
    os_ = ak.to_numpy(arrays["Q1"] != arrays["Q2"])
    np.testing.assert_allclose(sel.mass, ak.to_numpy(arrays["M"])[os_], rtol=1e-6, atol=1e-9)
    assert sel.counts == [2304, int(os_.sum())]
    assert 0 < os_.sum() < 2304  # same-sign pairs exist, so the cut removes something


def test_zmumu_job_all_compressions_agree(spark, testdata, tmp_path):
    """Every compression gives the same histograms and cut-flow through the whole Spark job."""
    results = []
    for name in ZMUMU_FILES:
        out = str(tmp_path / name)
        dimuon.run([testdata(name)], out, spark=spark, plot=False)
        results.append((read_hist(f"{out}/histograms.root", "dimuon_mass")[0], cutflow(out)))
    first_values, first_cuts = results[0]
    assert first_cuts["events"] == 2304
    assert first_values.sum() == first_cuts["opposite_charge"]
    for values, cuts in results[1:]:
        np.testing.assert_array_equal(values, first_values)
        assert cuts == first_cuts


def hzz_reference(path: str) -> tuple[np.ndarray, dict[str, int]]:
    """An independent per-event computation (plain Python loop) of the p4 selection on HZZ."""
    t = uproot.open(path)["events"].arrays(["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Muon_Charge"])
    masses, two, os_count = [], 0, 0
    for px, py, pz, e, q in zip(*(t[k].tolist() for k in t.fields), strict=True):
        if len(e) != 2:
            continue
        two += 1
        if q[0] == q[1]:
            continue
        os_count += 1
        m2 = (e[0] + e[1]) ** 2 - (px[0] + px[1]) ** 2 - (py[0] + py[1]) ** 2 - (pz[0] + pz[1]) ** 2
        masses.append(np.sqrt(max(m2, 0.0)))
    return np.array(masses), {"events": len(t), "exactly_two_muons": two, "opposite_charge": os_count}


def test_hzz_masses_match_independent_computation(testdata):
    path = testdata("uproot-HZZ.root")
    expected, counts = hzz_reference(path)
    sel = select_p4(uproot.open(path)["events"].arrays(SCHEMA_BRANCHES["p4"]))
    np.testing.assert_allclose(sel.mass, expected, rtol=1e-9)
    assert sel.counts == list(counts.values())


def test_hzz_cutflow_and_histogram_independent_of_task_count(spark, testdata, tmp_path):
    path = testdata("uproot-HZZ.root")
    expected_masses, expected_counts = hzz_reference(path)
    one, many = str(tmp_path / "one"), str(tmp_path / "many")
    dimuon.run([path], one, spark=spark, plot=False)
    m = dimuon.run([path], many, spark=spark, chunk_entries=97, plot=False)
    assert m["spark"]["tasks"] == -(-2421 // 97)
    assert cutflow(one) == expected_counts == cutflow(many)
    for name in ("dimuon_mass", "muon_pt", "muon_eta", "muon_phi"):
        v1, e1 = read_hist(f"{one}/histograms.root", name)
        v2, e2 = read_hist(f"{many}/histograms.root", name)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(e1, e2)
    values, edges = read_hist(f"{one}/histograms.root", "dimuon_mass")
    in_range = expected_masses[(expected_masses >= edges[0]) & (expected_masses < edges[-1])]
    np.testing.assert_array_equal(values, np.histogram(in_range, bins=edges)[0])


def test_output_contract(spark, testdata, tmp_path):
    out = str(tmp_path / "out")
    dimuon.run([testdata("uproot-HZZ.root")], out, spark=spark)
    assert sorted(os.listdir(out)) == [
        "_COLLIDERFLOW", "_SUCCESS", "_metrics.json", "cutflow.json", "dimuon_mass.png", "histograms.root",
    ]  # fmt: skip
    f = uproot.open(f"{out}/histograms.root")
    h = f["dimuon_mass"]
    assert h.classname == "TH1D"
    edges = h.axis().edges()
    assert edges[0] == pytest.approx(0.25) and edges[-1] == pytest.approx(300.0)
    np.testing.assert_allclose(np.diff(np.log(edges)), np.log(1200) / len(edges[1:]), rtol=1e-6)
    assert {"muon_pt", "muon_eta", "muon_phi"} <= {k.split(";")[0] for k in f.keys()}
    with open(f"{out}/_metrics.json") as fh:
        metrics = json.load(fh)
    assert metrics["events"] == 2421 and metrics["bytes_read"] > 0 and metrics["read_calls"] > 0
    per_file = metrics["files"][testdata("uproot-HZZ.root")]
    assert per_file["read_calls"] > 0 and per_file["latency_ms"]["p50"] >= 0
    assert metrics["events_per_second"] > 0
    with open(f"{out}/dimuon_mass.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_replaces_output(spark, testdata, tmp_path):
    out = str(tmp_path / "out")
    dimuon.run([testdata("uproot-HZZ.root")], out, spark=spark, plot=False)
    (tmp_path / "out" / "stale.txt").write_text("left from an older run")
    dimuon.run([testdata("uproot-Zmumu.root")], out, spark=spark, plot=False)
    assert not (tmp_path / "out" / "stale.txt").exists()
    assert cutflow(out)["events"] == 2304
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no staging left behind


@pytest.fixture(scope="module")
def nanoaod_sample(tmp_path_factory):
    from jobs.generate import nanoaod

    out = str(tmp_path_factory.mktemp("nanoaod") / "sample")
    nanoaod.generate(events=400_000, output=out, files=2, seed=7)
    return out


def test_generated_resonances_at_pdg_masses(spark, nanoaod_sample, tmp_path):
    """Each resonance shows up as a peak at its PDG mass within the detector resolution."""
    from jobs.generate.nanoaod import PT_RESOLUTION, RESONANCES

    out = str(tmp_path / "out")
    dimuon.run([f"{nanoaod_sample}/*.root"], out, spark=spark, chunk_entries=100_000, plot=False)
    values, edges = read_hist(f"{out}/histograms.root", "dimuon_mass")
    density = values / np.diff(edges)
    centers = np.sqrt(edges[1:] * edges[:-1])
    for name in ("eta", "omega", "phi", "J/psi", "psi(2S)", "Upsilon(1S)", "Z"):
        mass, width, _ = RESONANCES[name]
        sigma = np.hypot(PT_RESOLUTION / np.sqrt(2) * mass, width / 2)
        window = (centers > mass - 6 * sigma) & (centers < mass + 6 * sigma)
        below = (centers > mass - 20 * sigma) & (centers < mass - 10 * sigma)
        above = (centers > mass + 10 * sigma) & (centers < mass + 20 * sigma)
        continuum = min(density[below].mean(), density[above].mean())  # the other side may be a peak
        peak = centers[window][np.argmax(density[window])]
        assert abs(peak - mass) < 2 * sigma + (edges[1] / edges[0] - 1) * mass, name
        assert density[window].max() > 2 * continuum, f"{name}: no peak above the continuum"
    # the Z's fitted position and width and the J/psi yield in _metrics.json (the nightly trends' figures)
    found = json.loads(open(f"{out}/_metrics.json").read())["peaks"]
    z_mass, z_width, _ = RESONANCES["Z"]
    z_sigma = np.hypot(PT_RESOLUTION / np.sqrt(2) * z_mass, z_width / 2)
    assert abs(found["Z"]["mass"] - z_mass) < 0.3 * z_sigma, found
    # a Gaussian through a Breit-Wigner (width 2.5 GeV) smeared by ~0.8 GeV, over 80-102 GeV: its tails
    # make the fitted sigma wider than the core's z_sigma, but not by more than the window allows
    assert z_sigma < found["Z"]["width"] < 4 * z_sigma, (found, z_sigma)
    jpsi = json.loads(open(f"{out}/cutflow.json").read())  # the pairs the yield must stay below
    assert 0 < found["J/psi"]["events"] < jpsi["cuts"][-1]["events"], found


def test_generated_cutflow_every_cut_removes_something(spark, nanoaod_sample, tmp_path):
    out = str(tmp_path / "out")
    dimuon.run([nanoaod_sample], out, spark=spark, plot=False)
    cuts = cutflow(out)
    assert cuts["events"] == 400_000
    assert cuts["events"] > cuts["exactly_two_muons"] > cuts["opposite_charge"] > 0
    # the generator's shares are those of the real Run2012B/C cut-flow (50.5 %, then 77.4 %)
    assert cuts["exactly_two_muons"] / cuts["events"] == pytest.approx(0.5, abs=0.01)


def test_process_engine_equals_spark(spark, nanoaod_sample, bad_files, tmp_path):
    """The JVM-free local engine runs the same tasks and merge: histograms and cut-flow equal Spark's
    bin for bin, over several chunks per file, with a bad file skipped the same way."""
    outs = {}
    for engine in ("spark", "processes"):
        outs[engine] = str(tmp_path / engine)
        dimuon.run(
            [nanoaod_sample, bad_files["truncated"]],
            outs[engine],
            spark=spark if engine == "spark" else None,
            engine=engine,
            master="local[2]",
            on_bad_file="skip",
            chunk_entries=60_000,
            plot=False,
        )
    for name in ("dimuon_mass", "muon_pt", "muon_eta", "muon_phi"):
        np.testing.assert_array_equal(*(read_hist(f"{o}/histograms.root", name)[0] for o in outs.values()))
    assert cutflow(outs["spark"]) == cutflow(outs["processes"])
    with open(f"{outs['processes']}/_metrics.json") as f:
        metrics = json.load(f)
    assert metrics["spark"] == {"engine": "processes", "master": "local[2]", "workers": 2, "tasks": 8}
    assert [s["url"] for s in metrics["skipped_files"]] == [bad_files["truncated"]]
    assert metrics["task_seconds"] > 0 and metrics["bytes_read"] > 0


def test_process_engine_refuses_a_cluster_master(tmp_path):
    proc = run_cli("--input", "x.root", "--output", str(tmp_path / "o"), "--engine", "processes",
                   "--master", "spark://127.0.0.1:7077")  # fmt: skip
    assert proc.returncode == 2 and "--engine processes" in proc.stderr and "spark://" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_generator_is_deterministic(tmp_path):
    from jobs.generate import nanoaod

    paths = []
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        paths.append(nanoaod.generate(events=5000, output=str(tmp_path / tag), files=1, seed=seed)[0])
    a, b, c = (uproot.open(p)["Events"].arrays(SCHEMA_BRANCHES["nanoaod"]) for p in paths)
    assert ak.to_list(a) == ak.to_list(b)
    assert ak.to_list(a) != ak.to_list(c)


# --- AOD-style selection B on hand-built events -------------------------------------------------


def write_aod(path: str) -> None:
    """Five hand-built events; the comments say which cut each one fails."""
    mu = {
        # pt, eta, phi, charge, isGlobal, chIso, neuIso, phoIso, puIso
        0: [(30, 0.1, 0.0, 1, 1, 0, 0, 0, 0), (20, -0.5, 2.0, -1, 1, 0, 0, 0, 0)],  # passes
        1: [(30, 0.1, 0.0, 1, 1, 0, 0, 0, 0), (20, -0.5, 2.0, 1, 1, 0, 0, 0, 0)],  # same sign
        2: [(30, 2.2, 0.0, 1, 1, 0, 0, 0, 0), (20, -0.5, 2.0, -1, 1, 0, 0, 0, 0)],  # leading |eta| > 2.1
        3: [(30, 0.1, 0.0, 1, 1, 0, 0, 0, 0), (20, -0.5, 2.0, -1, 0, 0, 0, 0, 0)],  # 2nd not global
        # the 40 GeV muon fails rel-iso 0.5 via neutral iso, (4 + 20 - 0.5*2)/40 = 0.575, so the
        # leading 50 GeV (+, rel-iso 1/50) pairs with the 12 GeV (-)
        4: [(12, 0.3, 1.0, -1, 1, 0, 0, 0, 0), (40, 0.2, 0.5, 1, 1, 0, 4, 20, 2),
            (50, 1.0, -1.0, 1, 1, 1, 0, 0, 0)],
    }  # fmt: skip
    names = ["pt", "eta", "phi", "charge", "isGlobal", "sumChargedHadronPt", "sumNeutralHadronEt",
             "sumPhotonEt", "sumPUPt"]  # fmt: skip
    counts = [len(v) for v in mu.values()]
    rows = [m for v in mu.values() for m in v]
    dtype = {"charge": np.int32, "isGlobal": np.int32}
    cols = {
        n: ak.unflatten(np.array([r[i] for r in rows], dtype=dtype.get(n, np.float32)), counts)
        for i, n in enumerate(names)
    }
    with uproot.recreate(path) as f:
        muon = ak.zip(cols)
        f.mktree("Events", {"Muon": muon.type.content}).extend({"Muon": muon})


def test_aod_selection_b(spark, tmp_path):
    path = str(tmp_path / "aod.root")
    write_aod(path)
    out = str(tmp_path / "out")
    dimuon.run([path], out, schema="aod", spark=spark, plot=False)
    assert cutflow(out) == {
        "events": 5,
        "two_selected_muons": 4,  # event 3 keeps one muon
        "leading_muon_tight": 3,  # event 2: leading |eta| = 2.2
        "opposite_charge": 2,  # event 1 same sign; event 4: leading 50 (+), next 12 (-)
    }
    values, edges = read_hist(f"{out}/histograms.root", "dimuon_mass")
    assert values.sum() == 2


def test_auto_detects_aod(tmp_path):
    path = str(tmp_path / "aod.root")
    write_aod(path)
    assert dimuon.plan([path], "auto", None, 1000, "fail").schema == "aod"


# --- bad input -----------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.dimuon", "--master", "local[1]", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def bad_files(tmp_path, testdata):
    good = testdata("uproot-HZZ.root")
    garbage = tmp_path / "garbage.root"
    garbage.write_bytes(b"this is not a ROOT file at all" * 100)
    truncated = tmp_path / "truncated.root"
    data = open(good, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    no_tree = tmp_path / "no_tree.root"
    with uproot.recreate(no_tree) as f:
        f["something_else"] = np.histogram([1.0, 2.0])
    no_branch = tmp_path / "no_branch.root"
    with uproot.recreate(no_branch) as f:
        f.mktree("events", {"Muon_Px": np.float64, "Muon_Py": np.float64}).extend(
            {"Muon_Px": np.zeros(3), "Muon_Py": np.zeros(3)}
        )
    rntuple = tmp_path / "rntuple.root"
    with uproot.recreate(rntuple) as f:
        f["events"] = {"x": np.zeros(3)}  # plain assignment writes an RNTuple, not a TTree
    return {
        "good": good,
        "missing": str(tmp_path / "does_not_exist.root"),
        "garbage": str(garbage),
        "truncated": str(truncated),
        "no_tree": str(no_tree),
        "no_branch": str(no_branch),
        "rntuple": str(rntuple),
    }


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("missing", [], "no such file"),
        ("garbage", [], "not a readable ROOT file"),
        ("truncated", [], "truncated"),
        ("no_tree", ["--tree", "events"], "no tree 'events'"),
        ("no_tree", [], "holds no TTree or RNTuple (it holds: something_else (TH1D))"),
        ("no_branch", ["--schema", "p4"], "lacks branch(es) Muon_Pz, Muon_E, Muon_Charge"),
        ("no_branch", [], "cannot tell the schema"),
        ("no_branch", [], "near matches to the schemas' branches: Muon_Py, Muon_Px"),
        ("rntuple", [], "cannot tell the schema of 'events'"),
    ],
)
def test_bad_input_names_file_and_problem(spark, bad_files, tmp_path, case, extra, message):
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as err:
        dimuon.run([bad_files[case]], str(out), spark=spark, plot=False, **cli_kwargs(extra))
    assert bad_files[case] in str(err.value) and message in str(err.value)
    assert not out.exists()


def cli_kwargs(extra: list[str]) -> dict:
    return dict(zip((a.lstrip("-") for a in extra[::2]), extra[1::2], strict=True))


def test_bad_input_cli_exit_code_and_message(bad_files, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--input", bad_files["truncated"], "--output", str(out))
    assert proc.returncode == 2
    assert bad_files["truncated"] in proc.stderr and "error:" in proc.stderr
    assert not out.exists()


def test_unknown_schema_is_a_usage_error(tmp_path):
    proc = run_cli("--input", "x.root", "--output", str(tmp_path / "o"), "--schema", "miniaod")
    assert proc.returncode == 2 and "--schema" in proc.stderr


def test_skip_lists_bad_files(spark, bad_files, tmp_path):
    out = str(tmp_path / "out")
    bad = [bad_files[k] for k in ("garbage", "truncated", "missing")]
    dimuon.run([bad_files["good"], *bad], out, schema="p4", spark=spark, on_bad_file="skip", plot=False)
    with open(f"{out}/cutflow.json") as f:
        skipped = {s["url"]: s["problem"] for s in json.load(f)["skipped_files"]}
    with open(f"{out}/_metrics.json") as f:
        metrics = json.load(f)
    assert set(skipped) == set(bad) == {s["url"] for s in metrics["skipped_files"]}
    assert cutflow(out)["events"] == 2421  # the good file only
    assert metrics["files_read"] == 1


def test_all_files_bad_with_skip_fails(spark, bad_files, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BadInputError, match="no readable input file"):
        dimuon.run([bad_files["garbage"]], str(out), spark=spark, on_bad_file="skip", plot=False)
    assert not out.exists()


def test_subsets_are_disjoint_and_cover(spark, tmp_path):
    from jobs.generate import nanoaod

    files = nanoaod.generate(events=6000, output=str(tmp_path / "s"), files=6, seed=1)
    events = []
    for k in range(3):
        m = dimuon.run(
            [str(tmp_path / "s")], str(tmp_path / f"o{k}"), subset=f"{k}/3", spark=spark, plot=False
        )
        assert m["files_read"] == 2
        events.append(set(m["files"]))
    assert set.union(*events) == set(files) and sum(len(e) for e in events) == 6


# --- RNTuple inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["hzz", "nanoaod"])
def test_rntuple_gives_the_same_results_as_the_ttree(spark, testdata, tmp_path, source):
    """The same events as TTree and as RNTuple: same schema (auto), cut-flow and histograms."""
    if source == "hzz":
        tree, name = testdata("uproot-HZZ.root"), "events"
    else:
        from jobs.generate import nanoaod

        (tree,) = nanoaod.generate(events=3000, output=str(tmp_path / "nano"), files=1, seed=5)
        name = "Events"
    rntuple = tree_to_rntuple(tree, str(tmp_path / "rntuple.root"), name)
    outs = {fmt: str(tmp_path / fmt) for fmt in ("ttree", "rntuple")}
    m_tree = dimuon.run([tree], outs["ttree"], spark=spark, plot=False)
    m_rnt = dimuon.run([rntuple], outs["rntuple"], spark=spark, chunk_entries=700, plot=False)
    assert m_rnt["schema"] == m_tree["schema"] == ("p4" if source == "hzz" else "nanoaod")
    assert m_rnt["spark"]["tasks"] > 1  # entry ranges of the RNTuple, like a tree's
    assert cutflow(outs["rntuple"]) == cutflow(outs["ttree"])
    assert m_rnt["pairs"] == m_tree["pairs"] > 0
    for h in ("dimuon_mass", "muon_pt", "muon_eta", "muon_phi"):
        np.testing.assert_array_equal(*(read_hist(f"{o}/histograms.root", h)[0] for o in outs.values()))


# --- root:// (XRootD) inputs ---------------------------------------------------------------------


def test_root_inputs_equal_local(spark, xrootd_server, tmp_path):
    """Generated NanoAOD served by a real XRootD server: a root:// glob expands to the served files,
    and the job reading them gives the local run's cut-flow and histograms bin for bin, with the
    reads counted per root:// file."""
    from jobs.generate import nanoaod

    local = tmp_path / "nano"
    nanoaod.generate(events=20_000, output=str(local), files=2, seed=11)
    served = xrootd_server.put(local, f"dimuon/{tmp_path.name}")
    outs = {"local": str(tmp_path / "local"), "root": str(tmp_path / "root")}
    dimuon.run([f"{local}/*.root"], outs["local"], spark=spark, chunk_entries=4000, plot=False)
    m = dimuon.run([f"{served}/*.root"], outs["root"], spark=spark, chunk_entries=4000, plot=False)
    assert sorted(m["files"]) == [f"{served}/nanoaod_000{i}.root" for i in range(2)]
    assert all(f["bytes_read"] > 0 and f["requests"] > 0 for f in m["files"].values())
    assert cutflow(outs["root"]) == cutflow(outs["local"]) and cutflow(outs["local"])["events"] == 20_000
    for h in ("dimuon_mass", "muon_pt", "muon_eta", "muon_phi"):
        np.testing.assert_array_equal(*(read_hist(f"{o}/histograms.root", h)[0] for o in outs.values()))


# --- on a cluster without a shared disk ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.deep  # tests/dags/test_on_cluster.py runs this stage on the cluster in CI
def test_on_the_cluster_from_s3_equals_local(spark_cluster, s3_env, bucket, spark, tmp_path):
    """The command line as a driver in its own namespace, `--master spark://` with two workers that
    share no disk with it or each other, s3:// in and out: the local run's histograms bin for bin."""
    from bench.fixtures.cluster import run_driver
    from jobs.core import storage
    from jobs.generate import nanoaod
    from tests.core.test_storage import assert_same_dimuon_outputs, download

    sample = tmp_path / "nano"
    nanoaod.generate(events=20_000, output=str(sample), files=2, seed=13)
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(f"{sample}/", f"{bucket}/in/", recursive=True)
    local = tmp_path / "local"
    dimuon.run([f"{sample}/*.root"], str(local), spark=spark, chunk_entries=4000, plot=False)
    url = f"s3://{bucket}/out/dimuon"
    args = ["jobs.dimuon", "--input", f"s3://{bucket}/in/*.root", "--output", url, "--no-plot"]
    args += ["--chunk-entries", "4000", "--master", spark_cluster.master_url]  # 6 tasks: treeReduce shuffles
    done = run_driver(args, env=s3_env)
    assert done.returncode == 0, done.stderr[-3000:] + spark_cluster.logs()
    remote = download(url, tmp_path / "remote")
    assert_same_dimuon_outputs(local, remote)
    metrics = json.loads((remote / "_metrics.json").read_text())
    assert sorted(metrics["files"]) == [f"s3://{bucket}/in/nanoaod_000{i}.root" for i in range(2)]
    assert metrics["spark"]["tasks"] == 6 and metrics["bytes_read"] > 0


def test_a_path_with_spaces_is_one_path(tmp_path):
    """Issue 28: `--input "my data"` was split into `my` and `data` (200,000 events read, not 5,000)."""
    from jobs.generate import nanoaod

    for name, events in (("my", 3000), ("data", 2000), ("my data", 1000)):
        nanoaod.generate(events=events, output=str(tmp_path / name), files=1, seed=len(name))
    done = run_cli(
        "--input", str(tmp_path / "my data"), "--output", str(tmp_path / "out"), "--engine", "processes"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert next(iter(cutflow(str(tmp_path / "out")).values())) == 1000


def test_garbled_baskets_are_a_bad_file_not_a_crash(tmp_path):
    """Issue 28: 20 kB of random bytes inside a real file gave an IndexError traceback (exit 1, retried)
    and --on-bad-file skip did not skip it. Whatever the garbling breaks (a checksum, counts that
    disagree with their collections, offsets out of range), the file is bad input: one line naming it,
    exit 2; left out under skip."""
    import random

    from jobs.generate import nanoaod

    (good,) = nanoaod.generate(events=50_000, output=str(tmp_path / "good"), files=1, seed=42)
    data, size = pathlib.Path(good).read_bytes(), os.path.getsize(good)
    for seed in (1, 5, 7):  # an IndexError, a ValueError of the selection, another IndexError here
        rnd = random.Random(seed)
        garbled = bytearray(data)
        at = rnd.randrange(size // 8, size - 30_000)
        garbled[at : at + 20_000] = rnd.randbytes(20_000)
        folder = tmp_path / f"in{seed}"
        folder.mkdir()
        (folder / "a.root").write_bytes(bytes(garbled))
        shutil.copy(good, folder / "b.root")
        failed = run_cli("--input", str(folder), "--output", str(tmp_path / f"f{seed}"), "--no-plot")
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
        assert failed.stderr.strip().splitlines()[-1].startswith(f"error: {folder}/a.root: ")
        skipped = run_cli(
            "--input",
            str(folder),
            "--output",
            str(tmp_path / f"s{seed}"),
            "--no-plot",
            "--on-bad-file",
            "skip",
        )
        assert skipped.returncode == 0, skipped.stderr[-2000:]
        assert next(iter(cutflow(str(tmp_path / f"s{seed}")).values())) == 50_000
