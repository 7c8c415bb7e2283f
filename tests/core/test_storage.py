"""Object storage for real: the storage layer and the stages against moto's S3 server on loopback
(a real HTTP S3 endpoint, reached by s3fs/botocore exactly as a MinIO or AWS endpoint would be), the
atomic commit of outputs to a store without rename, and OCI configuration errors."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import uproot

from jobs.core import commit, listing, metering, storage
from jobs.core.errors import BadInputError, UsageError
from tests.conftest import SECRET

ROOT = pathlib.Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def executor_env(spark, env: dict[str, str]):
    """Give the Spark Python workers of the shared session the storage environment (what
    spark.executorEnv.* / envFrom do in a cluster); their daemon is keyed by it, so a fresh one starts."""
    sc = spark.sparkContext
    saved = dict(sc.environment)
    sc.environment.update(env)
    try:
        yield
    finally:
        sc.environment.clear()
        sc.environment.update(saved)


def keys(bucket: str) -> list[str]:
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.invalidate_cache()
    return sorted(p.split("/", 1)[1] for p in fs.find(bucket))


def write_files(directory: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = pathlib.Path(directory, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# --- the endpoint and credentials come from the environment -------------------------------------------


def test_endpoint_from_environment_precedence(monkeypatch):
    for key in storage.S3_ENDPOINT_ENV:
        monkeypatch.delenv(key, raising=False)
    assert storage.storage_options("s3://b/k") == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    assert storage.storage_options("s3://b/k") == {"endpoint_url": "http://generic:1"}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:2")
    assert storage.storage_options("s3://b/k") == {"endpoint_url": "http://s3-specific:2"}
    monkeypatch.setenv("COLLIDERFLOW_S3_ENDPOINT", "")  # an empty value (a chart default) is unset
    assert storage.storage_options("s3://b/k") == {"endpoint_url": "http://s3-specific:2"}
    monkeypatch.setenv("COLLIDERFLOW_S3_ENDPOINT", "http://ours:3")
    assert storage.storage_options("s3://b/k") == {"endpoint_url": "http://ours:3"}
    assert storage.storage_options("/local/path") == {}


def test_credentials_in_url_are_refused():
    with pytest.raises(UsageError, match="credentials in a URL") as err:
        storage.filesystem(f"s3://AKIA:{SECRET}@bucket/data.root")
    assert SECRET not in str(err.value)


def test_round_trip_through_loopback_server(bucket):
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.pipe_file(f"{bucket}/a/x.root", b"payload")
    stats = metering.IOStats(f"s3://{bucket}/a/x.root")
    metered = metering.MeteredFileSystem(fs, stats)
    assert metered.cat_file(f"{bucket}/a/x.root") == b"payload"
    assert metered.cat_ranges([f"{bucket}/a/x.root"] * 2, [0, 3], [3, 7]) == [b"pay", b"load"]
    assert (stats.bytes_read, stats.read_calls, stats.requests) == (14, 3, 2)
    assert listing.expand_inputs([f"s3://{bucket}/a"], suffix=".root") == [f"s3://{bucket}/a/x.root"]
    with pytest.raises(BadInputError, match="no such file"):
        listing.expand_inputs([f"s3://{bucket}/a/missing.root"])


# --- I/O accounting: concurrent reads kept, latency in fixed buckets -----------------------------------


def test_latency_histogram_quantiles_and_merge():
    """Bucketed quantiles stay within a bucket's width (12 %) of the exact ones; merging adds the
    histograms; memory does not grow with the number of reads."""
    rng = np.random.default_rng(1)
    seconds = rng.lognormal(np.log(0.02), 1.0, 20_000)
    a, b = metering.IOStats("a"), metering.IOStats("a")
    for i, x in enumerate(seconds):
        (a if i % 2 else b).record(100, float(x))
    merged = a.merge(b)
    assert merged.latency_counts.size == a.latency_counts.size < 200
    summary = merged.summary()
    assert summary["read_calls"] == summary["requests"] == 20_000 and summary["bytes_read"] == 2_000_000
    assert summary["read_seconds"] == pytest.approx(seconds.sum())
    assert summary["latency_ms"]["max"] == pytest.approx(seconds.max() * 1e3)
    for q in (50, 90, 99):
        exact = np.percentile(seconds, q) * 1e3
        assert summary["latency_ms"][f"p{q}"] == pytest.approx(exact, rel=0.12), q
    none = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    assert metering.IOStats("none").summary()["latency_ms"] == none


def write_baskets(path: str, baskets: int = 40, entries: int = 8192) -> None:
    """A TTree whose three branches have one uncompressed 64 kB basket per extend, interleaved."""
    with uproot.recreate(path, compression=None) as f:
        tree = f.mktree("t", {"x": np.float64, "y": np.float64, "z": np.float64})
        for i in range(baskets):
            block = np.arange(i * entries, (i + 1) * entries, dtype=np.float64)
            tree.extend({"x": block, "y": -block, "z": 2 * block})


def test_uproot_reads_concurrently_through_the_meter(bucket, tmp_path):
    """On the store, one branch of 40 baskets (the other two in the gaps): uproot's source sends the
    ranges as vectors, with more than one request in flight, and every byte is counted."""
    from jobs.core import rootio

    local = str(tmp_path / "b.root")
    write_baskets(local)
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(local, f"{bucket}/b.root")
    url = f"s3://{bucket}/b.root"
    stats = metering.IOStats(url)
    table = rootio.open_table(url, "t", stats)
    try:
        x = rootio.read_arrays(url, table, ["x"], 0, table.num_entries)["x"]
    finally:
        table.file.close()
    np.testing.assert_array_equal(x.to_numpy(), np.arange(40 * 8192, dtype=np.float64))
    assert stats.read_calls >= 40 > stats.requests  # ranges travel as vectors, not one read each
    assert stats.max_concurrent >= 2
    assert 40 * 8 * 8192 <= stats.bytes_read < os.path.getsize(local)  # x's baskets, not y's or z's
    summary = stats.summary()
    assert summary["latency_ms"]["p50"] > 0 and summary["max_concurrent_requests"] >= 2


# --- a reader refuses an incomplete output -------------------------------------------------------


def test_without_success_a_stage_output_is_refused(bucket, tmp_path):
    """A stage reading another stage's output requires _SUCCESS (locally too); other directories
    (ROOT inputs written by other tools) need no marker."""
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.pipe_file(f"{bucket}/parts/part-0.parquet", b"x")
    storage.check_complete(f"s3://{bucket}/parts")
    with pytest.raises(BadInputError, match="no _SUCCESS"):
        storage.check_complete(f"s3://{bucket}/parts", required=True)
    (tmp_path / "local").mkdir()
    with pytest.raises(BadInputError, match="no _SUCCESS"):
        storage.check_complete(str(tmp_path / "local"), required=True)
    (tmp_path / "local" / "_SUCCESS").touch()
    storage.check_complete(str(tmp_path / "local"), required=True)


# --- stages against the store: same results as on the local filesystem --------------------------------


def run_stage(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A stage as a pod runs it: its command line, with credentials and endpoint only in the environment."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def download(url: str, dest: pathlib.Path) -> pathlib.Path:
    fs, path = storage.filesystem(url)
    fs.invalidate_cache()
    fs.get(path.rstrip("/") + "/", str(dest) + "/", recursive=True)
    return dest


def assert_no_secret(directory: pathlib.Path, *logs: str) -> None:
    """The secret key appears in no output file and no log line."""
    for path in directory.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"secret key written into {path.name}"
    for log in logs:
        assert SECRET not in log, "secret key written into the job log"


def hist_values(path: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with uproot.open(path) as f:
        return {k.split(";")[0]: (f[k].values(flow=True), f[k].axis().edges()) for k in f.keys()}


def assert_same_dimuon_outputs(local: pathlib.Path, remote: pathlib.Path) -> None:
    a, b = (json.loads((d / "cutflow.json").read_text()) for d in (local, remote))
    assert a["cuts"] == b["cuts"] and a["schema"] == b["schema"]
    ha, hb = hist_values(local / "histograms.root"), hist_values(remote / "histograms.root")
    assert ha.keys() == hb.keys() and "dimuon_mass" in ha
    for name in ha:
        np.testing.assert_array_equal(ha[name][0], hb[name][0], err_msg=name)
        np.testing.assert_array_equal(ha[name][1], hb[name][1], err_msg=name)
    assert (remote / "_SUCCESS").exists() and not (remote / "_COMMITTING").exists()


@pytest.mark.slow
def test_dimuon_s3_matches_local_run(spark, testdata, bucket, s3_env, tmp_path):
    """Real CMS open data (uproot-Zmumu.root) on the store, the di-muon job's command line reading
    s3:// and writing s3:// (credentials and endpoint only in its environment), against the same job
    on the local file."""
    from jobs.dimuon import job as dimuon

    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(testdata("uproot-Zmumu.root"), f"{bucket}/in/cms/uproot-Zmumu.root")

    cases = {"cms": [testdata("uproot-Zmumu.root")]}
    for name, local_inputs in cases.items():
        local_out = tmp_path / f"local-{name}"
        dimuon.run(local_inputs, str(local_out), spark=spark, plot=False)
        remote_url = f"s3://{bucket}/out/{name}"
        proc = run_stage(
            "jobs.dimuon",
            "--input",
            f"s3://{bucket}/in/{name}",
            "--output",
            remote_url,
            "--master",
            "local[2]",
            "--no-plot",
            env=s3_env,
        )
        remote_out = download(remote_url, tmp_path / f"remote-{name}")
        assert_same_dimuon_outputs(local_out, remote_out)
        metrics = json.loads((remote_out / "_metrics.json").read_text())
        assert metrics["files"] and all(u.startswith(f"s3://{bucket}/in/") for u in metrics["files"])
        assert metrics["bytes_read"] > 0
        assert_no_secret(remote_out, proc.stdout, proc.stderr)
    assert not [k for k in keys(bucket) if "staging" in k or "_COMMITTING" in k]


# --- a store that cannot be used: one line naming the URL, exit 2, at once, nothing written -----------


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


NO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def run_failing(module: str, *args: str, env: dict[str, str]) -> tuple[str, float]:
    """A stage's command line that must refuse: exit 2, one error line under 500 characters, no
    traceback; returns that line and how long the run took."""
    import time

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--master", "local[1]"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(errors[0]) < 500, proc.stderr[-3000:]
    return errors[0], seconds


@pytest.mark.parametrize(
    ("case", "where", "message"),
    [
        ("unreachable", "input", "cannot reach the object store at http://127.0.0.1:"),
        ("no_credentials", "input", "no credentials for the object store"),
        ("no_bucket", "input", "bucket 'cf-no-such-bucket' does not exist"),
        ("unreachable", "output", "cannot reach the object store at http://127.0.0.1:"),
        ("no_credentials", "output", "no credentials for the object store"),
        ("no_bucket", "output", "bucket 'cf-no-such-bucket' does not exist"),
    ],
)
def test_unusable_s3_store_is_one_line(bucket, s3_env, tmp_path, testdata, case, where, message):
    """The di-muon job with an unusable store on its input or its output: refused before any work,
    naming the URL (the option for an output), within seconds (no SDK retries), nothing written."""
    fs, _ = storage.filesystem(f"s3://{bucket}")
    fs.put(testdata("uproot-HZZ.root"), f"{bucket}/in/hzz.root")
    env = dict(s3_env)
    if case == "unreachable":
        env["COLLIDERFLOW_S3_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    elif case == "no_credentials":
        env.update(NO_CREDENTIALS)
    store = "cf-no-such-bucket" if case == "no_bucket" else bucket
    good_in, good_out = f"s3://{bucket}/in/hzz.root", tmp_path / "out"
    if where == "input":
        url = f"s3://{store}/in/hzz.root"
        line, seconds = run_failing("jobs.dimuon", "--input", url, "--output", str(good_out), env=env)
        assert f"error: {url}: {message}" in line
        assert not good_out.exists()
    else:
        url = f"s3://{store}/out/dimuon"
        if case != "no_bucket":  # the input is read from the live store only when the case allows it
            good_in = testdata("uproot-HZZ.root")
        line, seconds = run_failing("jobs.dimuon", "--input", good_in, "--output", url, env=env)
        assert f"error: --output {url}: {message}" in line
    assert seconds < 60  # the process's own start (imports) included; the probe itself: next test
    assert keys(bucket) == ["in/hzz.root"]  # nothing written, not even the write probe


def test_unreachable_endpoint_fails_within_seconds(s3_env, monkeypatch):
    """No retries with backoff: a closed endpoint is reported in well under the SDKs' tens of seconds."""
    import time

    monkeypatch.setenv("COLLIDERFLOW_S3_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    t0 = time.perf_counter()
    with pytest.raises(BadInputError, match="cannot reach the object store"):
        listing.expand_inputs(["s3://bucket/data/*.root"])
    with pytest.raises(BadInputError, match="^--output s3://bucket/out: cannot reach"):
        commit.check_writable("s3://bucket/out")
    assert time.perf_counter() - t0 < 5


def test_refusing_xrootd_server_is_one_line(tmp_path):
    """A root:// host that refuses: the ingest command line names the URL and the server, exit 2, in
    seconds (the XRootD client's own default retries for minutes)."""
    url = f"root://127.0.0.1:{closed_port()}//data/qcd"
    line, seconds = run_failing(
        "jobs.ingest",
        *("--input", f"qcd={url}", "--input", f"ttbar={url}", "--input", f"wjets={url}"),
        *("--output", str(tmp_path / "out")),
        env={},
    )
    assert line.startswith(f"error: {url}: cannot reach the XRootD server 127.0.0.1:"), line
    assert seconds < 60 and not (tmp_path / "out").exists()


# --- OCI: a missing or broken configuration is named, not a stack trace ------------------------------


def test_oci_missing_config_file(monkeypatch, tmp_path):
    monkeypatch.delenv(storage.OCI_AUTH_ENV, raising=False)
    missing = tmp_path / "no-such-config"
    monkeypatch.setenv("OCI_CONFIG_FILE", str(missing))
    with pytest.raises(BadInputError, match="OCI config file not found") as err:
        storage.filesystem("oci://bucket@namespace/data/x.root")
    assert err.value.source == str(missing)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("\x00\x01 this is not an ini file\n", "invalid OCI config .*no section headers\\.$"),
        ("[OTHER]\nuser=ocid1.user.oc1..x\n", "\\(profile DEFAULT\\): fingerprint missing, key_file missing"),
        ("[DEFAULT]\nuser=ocid1.user.oc1..x\nfingerprint=aa:bb\ntenancy=ocid1.tenancy.oc1..x\n"
         "region=eu-frankfurt-1\nkey_file=/nonexistent/key.pem\n", "key_file's value '/nonexistent/key.pem'"),
        ("[DEFAULT]\nuser=not-an-ocid\n", "tenancy missing, user malformed"),
    ],
    ids=["garbage", "no-profile", "missing-key-file", "incomplete"],
)  # fmt: skip
def test_oci_invalid_config_file(monkeypatch, tmp_path, content, problem):
    monkeypatch.delenv(storage.OCI_AUTH_ENV, raising=False)
    config = tmp_path / "config"
    config.write_text(content)
    monkeypatch.setenv("OCI_CONFIG_FILE", str(config))
    with pytest.raises(BadInputError, match=problem) as err:
        storage.filesystem("oci://bucket@namespace/data/x.root")
    assert err.value.source == str(config)


def test_oci_unknown_auth_type_and_principals(monkeypatch, tmp_path):
    monkeypatch.setenv("OCI_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv(storage.OCI_AUTH_ENV, "password")
    with pytest.raises(UsageError, match="COLLIDERFLOW_OCI_AUTH='password'"):
        storage.storage_options("oci://bucket@namespace/x")
    # Instance principals need no config file: the node identity signs the requests.
    monkeypatch.setenv(storage.OCI_AUTH_ENV, "instance_principal")
    assert storage.storage_options("oci://bucket@namespace/x") == {"iam_type": "instance_principal"}


def test_oci_bad_config_cli_exit_code(tmp_path):
    """Through a stage's command line: exit 2 and one line naming the config file."""
    config = tmp_path / "oci-config"
    config.write_text("garbage without sections\n")
    env = {k: v for k, v in os.environ.items() if k != storage.OCI_AUTH_ENV}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.dimuon",
            "--input",
            "oci://b@ns/x.root",
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**env, "OCI_CONFIG_FILE": str(config)},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {config}: invalid OCI config" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ingest_s3_matches_local_run(spark, bucket, s3_env, tmp_path):
    """A tiny generated Delphes sample on the store, ingestion reading s3:// and writing its Parquet
    dataset to s3://, against the same job on local files: same parts, same rows, same summary."""
    import pyarrow.parquet as pq

    from jobs.dltrigger_schema import CLASSES, SAMPLES
    from jobs.generate import delphes
    from jobs.ingest import job as ingest

    fs, _ = storage.filesystem(f"s3://{bucket}")
    sample = tmp_path / "delphes"
    delphes.generate(events=50, output=str(sample), files=1, seed=5)
    fs.put(str(sample) + "/", f"{bucket}/in/delphes/", recursive=True)

    local_out = tmp_path / "local-ingest"
    ingest.run([f"{n}={sample / SAMPLES[n]}" for n in CLASSES], str(local_out), spark=spark)
    remote_url = f"s3://{bucket}/out/ingest"
    with executor_env(spark, s3_env):  # the Spark tasks read the inputs from the store themselves
        ingest.run([f"{n}=s3://{bucket}/in/delphes/{SAMPLES[n]}" for n in CLASSES], remote_url, spark=spark)
    remote_out = download(remote_url, tmp_path / "remote-ingest")

    def parts(root: pathlib.Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))

    assert parts(local_out) == parts(remote_out) and len(parts(local_out)) == len(CLASSES)
    for rel in parts(local_out):
        a, b = (pq.read_table(root / rel) for root in (local_out, remote_out))
        assert a.num_rows == b.num_rows > 0
        assert a.drop_columns(["source_file"]).equals(b.drop_columns(["source_file"])), rel
        names = [{pathlib.PurePosixPath(u).name for u in t.column("source_file").to_pylist()} for t in (a, b)]
        assert names[0] == names[1]
        assert all(u.startswith(f"s3://{bucket}/in/") for u in b.column("source_file").to_pylist())

    def summary(root: pathlib.Path, prefix: str) -> str:
        return (root / "_summary.json").read_text().replace(prefix, "<input>")

    assert summary(local_out, str(sample)) == summary(remote_out, f"s3://{bucket}/in/delphes")
    assert (remote_out / "_SUCCESS").exists()
    assert_no_secret(remote_out)


@pytest.mark.parametrize("module", ["jobs.core.tf_readers", "jobs.train.callbacks"])
def test_xrootd_client_loads_in_a_process_that_imported_tensorflow(module):
    """Importing XRootD's client after TensorFlow segfaults; every module importing TensorFlow loads
    jobs.core.tf_env, and so the client, first. Quietly: no ERROR line (CUDA's cuInit on a CPU host) and
    none of TensorFlow's load-time banners."""
    code = f"import {module}, XRootD.client, fsspec; fsspec.filesystem('root', hostid='localhost')"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if not os.path.exists("/proc/driver/nvidia/version"):
        assert not [line for line in proc.stderr.splitlines() if line.startswith("E0000")], proc.stderr
    assert "oneDNN" not in proc.stderr and "InitializeLog" not in proc.stderr, proc.stderr


def test_the_airflow_side_loads_no_xrootd_client():
    """What the DAG files and plugins import of jobs/ loads no XRootD client: its exit hook raises
    `OSError: Bad file descriptor` in a supervised task process, an ERROR traceback in every task log."""
    code = (
        "import sys, jobs.core.cli, jobs.dltrigger_schema, colliderflow.params, colliderflow.backends.local; "
        "assert 'XRootD' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_only_regular_files_are_opened_as_data(tmp_path):
    """Issue 28: a FIFO named `*.root` (or among the test shards) blocked its reader forever. Listing
    refuses it, naming it, before any read; the stage ends in one line with exit 2."""
    from jobs.core.listing import expand_inputs
    from jobs.core.tf_staging import TFRECORD_SUFFIXES, list_data_files

    (tmp_path / "nano").mkdir()
    (tmp_path / "nano" / "a.root").write_bytes(b"x")
    os.mkfifo(tmp_path / "nano" / "b.root")
    (tmp_path / "shards").mkdir()
    os.mkfifo(tmp_path / "shards" / "part-0.tfrecord")
    fifo = f"{tmp_path}/nano/b.root: is a FIFO, not a regular file"
    for pattern in (f"{tmp_path}/nano", f"{tmp_path}/nano/*.root", f"{tmp_path}/nano/b.root"):
        with pytest.raises(BadInputError, match=fifo):
            expand_inputs([pattern], ".root")
    with pytest.raises(BadInputError, match="part-0.tfrecord: is a FIFO"):
        list_data_files(str(tmp_path / "shards"), TFRECORD_SUFFIXES)
    cmd = [
        sys.executable,
        "-m",
        "jobs.dimuon",
        "--input",
        str(tmp_path / "nano"),
        "--output",
        str(tmp_path / "o"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(f"error: {fifo}")
    assert not (tmp_path / "o").exists()
