"""One storage layer for every stage: fsspec URLs in (local, s3://, oci://, root://), how a reader
knows an output is complete, and per-file I/O accounting (bytes, read calls, latency) so that
storage latency is a measured quantity. How outputs get written: jobs.core.commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np

from jobs.core.errors import BadInputError, UsageError

GLOB_CHARS = set("*?[")
SUCCESS_MARKER = "_SUCCESS"
COMMITTING_MARKER = "_COMMITTING"
# Sidecar files a stage writes beside its data. The leading "_" (as Hadoop's _SUCCESS) makes Parquet
# readers (pandas, pyarrow.dataset, Spark) skip them, so an output directory opens as a dataset.
METRICS_FILE = "_metrics.json"
SUMMARY_FILE = "_summary.json"


# Object-store endpoint for S3-compatible stores (MinIO, Ceph RGW, CERN S3, moto): the first of these
# environment variables that is set and non-empty. AWS_ENDPOINT_URL(_S3) are the AWS SDKs' own names.
S3_ENDPOINT_ENV = ("COLLIDERFLOW_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# OCI: auth type and, for api_key, the standard config file and profile (OCI CLI/SDK variable names).
OCI_AUTH_ENV = "COLLIDERFLOW_OCI_AUTH"
OCI_AUTH_TYPES = ("api_key", "instance_principal", "resource_principal", "oke_workload_identity")
_OCIFS_IAM = {"oke_workload_identity": "oke_principal"}


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _oci_options() -> dict[str, Any]:
    """ocifs arguments from the environment. api_key (the default) needs a readable, valid OCI config
    file ($OCI_CONFIG_FILE or ~/.oci/config, profile $OCI_CLI_PROFILE or DEFAULT); the principal types
    need nothing but the node/pod identity. A bad config is reported here, naming the file, instead of
    as a stack trace from inside the first request."""
    import oci.config

    auth = _env(OCI_AUTH_ENV) or "api_key"
    if auth not in OCI_AUTH_TYPES:
        raise UsageError(f"{OCI_AUTH_ENV}={auth!r}: choose one of {', '.join(OCI_AUTH_TYPES)}")
    if auth != "api_key":
        return {"iam_type": _OCIFS_IAM.get(auth, auth)}
    location = os.path.expanduser(
        _env("OCI_CONFIG_FILE", "OCIFS_CONFIG_LOCATION") or oci.config.DEFAULT_LOCATION
    )
    profile = _env("OCI_CLI_PROFILE", "OCIFS_CONFIG_PROFILE") or oci.config.DEFAULT_PROFILE
    hint = f"(or set {OCI_AUTH_ENV}=instance_principal|resource_principal|oke_workload_identity)"
    if not os.path.isfile(location):
        raise BadInputError(location, f"OCI config file not found; set OCI_CONFIG_FILE {hint}")
    try:
        config = oci.config.from_file(location, profile)
        oci.config.validate_config(config)
    except Exception as exc:  # configparser.Error, oci.exceptions.*: all mean an unusable config
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else str(exc)
        if isinstance(detail, dict):  # validate_config: {field: "missing" | "malformed"}
            problem = ", ".join(f"{key} {state}" for key, state in sorted(detail.items()))
        else:
            problem = detail.splitlines()[0].split(". Please", 1)[0].split(" For more info", 1)[0]
        raise BadInputError(location, f"invalid OCI config (profile {profile}): {problem}") from None
    return {"config": location, "profile": profile, "iam_type": "api_key"}


def storage_options(url: str) -> dict[str, Any]:
    """fsspec arguments for a URL's protocol, taken from the environment (Kubernetes Secrets and
    ConfigMaps arrive as env vars). Access keys themselves are left to the SDKs' own env lookup
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, OCI config), so they never pass through here."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol in ("s3", "s3a"):
        endpoint = _env(*S3_ENDPOINT_ENV)
        return {"endpoint_url": endpoint} if endpoint else {}
    if protocol == "oci":
        return _oci_options()
    if protocol == "root":
        return _xrootd_options()
    return {}


def _xrootd_options() -> dict[str, Any]:
    """Make the XRootD client give up on a server that refuses or is down after one attempt (its
    default, 5 attempts in 120 s windows, takes ten minutes to report it) unless XRD_CONNECTIONRETRY
    is set. The client reads its settings per process, so this holds for every root:// URL."""
    from XRootD import client

    if not os.environ.get("XRD_CONNECTIONRETRY"):
        client.EnvPutInt("ConnectionRetry", 1)
    return {}


STORES_HINT = "use a local path, s3://, oci:// or root://"


def check_protocol(url: str, source: str | None = None) -> None:
    """Refuse, naming `source` (default: the URL), a URL whose protocol fsspec does not know or cannot
    load here (its package is not installed): found before any work, not as a traceback from the
    first listing."""
    protocol = _protocol(url)
    if protocol == "file":
        return
    if protocol not in fsspec.available_protocols():
        raise BadInputError(source or url, f"unknown storage protocol {protocol}://; {STORES_HINT}")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise BadInputError(
            source or url, f"storage protocol {protocol}:// is not installed here ({_first_line(exc)})"
        ) from None


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a URL and the path inside it (credentials come from the environment;
    credentials embedded in a URL are refused, since URLs end up in logs and _metrics.json)."""
    check_protocol(url)
    if "://" in url and urllib.parse.urlsplit(url).password is not None:
        raise UsageError(
            f"{url.split('://', 1)[0]}://...: credentials in a URL are refused; use the environment"
        )
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, path


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


PROBE_TIMEOUT_S = 5
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError"}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:240] if text else type(exc).__name__


def storage_problem(exc: BaseException, url: str) -> str | None:
    """What a storage backend's exception says about reaching `url`'s store, in one line (None when
    it is about something else): the SDKs' own messages name neither the setting to change nor, for
    XRootD, the server."""
    names = {c.__name__ for c in type(exc).__mro__}
    protocol = _protocol(url)
    if names & _NO_CREDENTIALS:
        return "no credentials for the object store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if names & _UNREACHABLE:
        endpoint = storage_options(url).get("endpoint_url") or "the default endpoint"
        return f"cannot reach the object store at {endpoint} ({_first_line(exc)})"
    if protocol == "root" and isinstance(exc, OSError) and "[FATAL]" in str(exc):
        host = urllib.parse.urlsplit(url).netloc
        detail = str(exc)[str(exc).index("[FATAL]") :].splitlines()[0][:200]
        return f"cannot reach the XRootD server {host} ({detail})"
    if isinstance(exc, PermissionError) and not is_local(url):
        return f"access denied ({_first_line(exc)}); check the credentials and the bucket's policy"
    return None


@contextlib.contextmanager
def store_errors(url: str, source: str | None = None) -> Iterator[None]:
    """Turn a remote store's failure (unreachable, no credentials, refused, denied) into a one-line
    BadInputError naming `source` (default: the URL)."""
    try:
        yield
    except BadInputError:
        raise
    except Exception as exc:
        problem = storage_problem(exc, url)
        if problem is None and isinstance(exc, OSError) and not is_local(url):
            problem = _first_line(exc)
        if problem is None:
            raise
        raise BadInputError(source or url, problem) from None


def _probe_filesystem(url: str) -> fsspec.AbstractFileSystem:
    """A private S3 filesystem that tries once with short timeouts: the SDK's and s3fs's retries (with
    backoff) would take tens of seconds to report an endpoint that is down."""
    fs = fsspec.filesystem(
        _protocol(url),
        skip_instance_cache=True,
        config_kwargs={
            "connect_timeout": PROBE_TIMEOUT_S,
            "read_timeout": PROBE_TIMEOUT_S,
            "retries": {"max_attempts": 1},
        },
        **storage_options(url),
    )
    fs.retries = 1
    return fs


def probe_store(url: str, *, source: str | None = None, write: bool = False) -> None:
    """Before any work: fail at once, in one line naming `source` (default: the URL), when an S3 URL's
    endpoint is unreachable, credentials are missing or refused, or the bucket does not exist; with
    `write`, also when an object cannot be written beside `url`. Other stores report such problems
    from their first listing (through store_errors), which fails as fast. Any URL: its protocol is
    one fsspec knows (check_protocol)."""
    check_protocol(url, source)
    if _protocol(url) not in ("s3", "s3a"):
        return
    filesystem(url)  # refuses credentials in the URL
    with store_errors(url, source):
        fs = _probe_filesystem(url)
        path = fsspec.core.strip_protocol(url).rstrip("/")
        bucket = path.split("/", 1)[0]
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise BadInputError(source or url, f"bucket {bucket!r} does not exist") from None
        if write:
            probe = f"{path.rpartition('/')[0] or bucket}/.colliderflow-probe-{uuid.uuid4().hex[:12]}"
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)


def check_input_dir(url: str, option: str, expected: str = "") -> None:
    """Before any work: the input directory `url` given as `option` exists and is a directory, on a
    store that answers (probe_store). A file in its place (a 0-byte one included) is named as such,
    not as a missing directory; `expected` (e.g. "the jobs.ingest output") says what belongs there."""
    source = f"{option} {url}"
    probe_store(url, source=source)
    hint = f" (expected {expected})" if expected else ""
    with store_errors(url, source):
        fs, path = filesystem(url)
        if fs.isdir(path):
            return
        if fs.exists(path):
            raise BadInputError(source, f"is a file, not a directory{hint}")
    raise BadInputError(source, f"no such directory{hint}")


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, template: str) -> str:
    """Give a path found by fs.glob back the protocol of the URL it came from."""
    if is_local(template):
        return path
    return fs.unstrip_protocol(path)


def expand_inputs(patterns: list[str], suffix: str | None = None, missing_ok: bool = False) -> list[str]:
    """Sorted, de-duplicated URLs for files, globs or directories (whose files ending in `suffix` are
    taken); a pattern that matches nothing is an error, except that with `missing_ok` a plain path
    that does not exist is kept, for the reader to report (and a skip policy to list) as a bad file."""
    out: list[str] = []
    stores: dict[tuple[str, str], str] = {}
    for pattern in patterns:
        stores.setdefault(urllib.parse.urlsplit(pattern)[:2], pattern)
    for first in stores.values():  # once per store (bucket), named by its first pattern
        probe_store(first)
    for pattern in patterns:
        with store_errors(pattern):
            out.extend(_expand(pattern, suffix, missing_ok))
    return list(dict.fromkeys(out))


def _expand(pattern: str, suffix: str | None, missing_ok: bool) -> list[str]:
    fs, path = filesystem(pattern)
    if GLOB_CHARS & set(path):
        matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
        if not matches:
            raise BadInputError(pattern, "the glob matches no file")
        return [_unstrip(fs, p, pattern) for p in matches]
    if fs.isdir(path):
        check_complete(pattern)
        matches = sorted(p for p in fs.find(path) if suffix is None or p.endswith(suffix))
        if not matches:
            raise BadInputError(pattern, f"the directory holds no {suffix or ''} file")
        return [_unstrip(fs, p, pattern) for p in matches]
    if not missing_ok and not fs.exists(path):
        raise BadInputError(pattern, "no such file")
    return [pattern]


def select_subset(files: list[str], subset: str | None) -> list[str]:
    """Files of subset 'k/N': every N-th file of the sorted list from index k, so that the N subsets
    are disjoint and together cover the input (what backfills over dataset subsets rely on)."""
    if not subset or subset == "all":
        return files
    try:
        k, n = (int(x) for x in subset.split("/"))
    except ValueError:
        raise BadInputError("--subset", f"{subset!r} is not of the form k/N") from None
    if n < 1 or not 0 <= k < n:
        raise BadInputError("--subset", f"{subset!r} needs N >= 1 and 0 <= k < N")
    chosen = sorted(files)[k::n]
    if not chosen:
        raise BadInputError("--subset", f"subset {subset} of {len(files)} file(s) is empty")
    return chosen


# Read latency is kept as counts in fixed log-spaced buckets (20 per decade from 1 us to 1000 s, plus
# under- and overflow): a file read in millions of requests costs the same few hundred integers as one
# read in ten, and histograms of chunks and files merge by addition.
LATENCY_EDGES_MS = 10.0 ** np.arange(-3.0, 6.0 + 1e-9, 0.05)


def _no_latencies() -> np.ndarray:
    return np.zeros(LATENCY_EDGES_MS.size + 1, dtype=np.int64)


def _quantile_ms(counts: np.ndarray, q: float) -> float:
    """The q-quantile of a bucketed latency histogram, interpolated log-linearly inside its bucket
    (within 6 % of the exact value for 20 buckets per decade)."""
    total = int(counts.sum())
    if not total:
        return 0.0
    rank = q * total
    cum = np.cumsum(counts)
    i = min(int(np.searchsorted(cum, rank, side="left")), counts.size - 1)
    if i == 0:
        return float(LATENCY_EDGES_MS[0])
    if i == counts.size - 1:
        return float(LATENCY_EDGES_MS[-1])
    lo, hi = LATENCY_EDGES_MS[i - 1], LATENCY_EDGES_MS[i]
    frac = (rank - (cum[i] - counts[i])) / counts[i]
    return float(lo * (hi / lo) ** frac)


@dataclass
class IOStats:
    """Reads of one file: bytes, byte ranges, requests (what the reader waits for: one range, or a
    vector of ranges fetched concurrently), how many requests were in flight at once, and a
    fixed-bucket histogram of the requests' latency with its exact total and maximum."""

    url: str
    bytes_read: int = 0
    read_calls: int = 0
    requests: int = 0
    read_seconds: float = 0.0
    max_seconds: float = 0.0
    max_concurrent: int = 0  # requests in flight at once, at the most
    latency_counts: np.ndarray = field(default_factory=_no_latencies, repr=False)

    def record(self, nbytes: int, seconds: float, ranges: int = 1) -> None:
        self.bytes_read += nbytes
        self.read_calls += ranges
        self.requests += 1
        self.read_seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)
        self.latency_counts[np.searchsorted(LATENCY_EDGES_MS, seconds * 1e3, side="right")] += 1

    def merge(self, other: IOStats) -> IOStats:
        return IOStats(
            self.url,
            self.bytes_read + other.bytes_read,
            self.read_calls + other.read_calls,
            self.requests + other.requests,
            self.read_seconds + other.read_seconds,
            max(self.max_seconds, other.max_seconds),
            max(self.max_concurrent, other.max_concurrent),
            self.latency_counts + other.latency_counts,
        )

    def summary(self) -> dict[str, Any]:
        pct = {f"p{q}": _quantile_ms(self.latency_counts, q / 100) for q in (50, 90, 99)}
        return {
            "bytes_read": self.bytes_read,
            "read_calls": self.read_calls,
            "requests": self.requests,
            "max_concurrent_requests": self.max_concurrent,
            "read_seconds": self.read_seconds,
            "latency_ms": {
                **{k: min(v, self.max_seconds * 1e3) for k, v in pct.items()},
                "max": self.max_seconds * 1e3,
            },
        }


def merge_io(a: dict[str, IOStats], b: dict[str, IOStats]) -> dict[str, IOStats]:
    """Associative merge of per-file I/O statistics keyed by URL."""
    out = dict(a)
    for url, stats in b.items():
        out[url] = out[url].merge(stats) if url in out else stats
    return out


class MeteredFileSystem:
    """An fsspec filesystem seen through a meter: its range reads (cat_file, cat_ranges and their async
    forms, which uproot's fsspec source issues concurrently on fsspec's event loop) add their bytes and
    latency to an IOStats; every other attribute is the filesystem's own. The reads themselves are
    untouched, so a reader keeps its concurrency (wrapping the file object instead serialises them)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, stats: IOStats):
        self._fs = fs
        self._stats = stats
        self._lock = threading.Lock()  # local reads run in worker threads
        self._in_flight = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    @contextlib.contextmanager
    def _request(self) -> Iterator[list]:
        """Time one request and count what it returned (the caller puts the data in the list)."""
        with self._lock:
            self._in_flight += 1
            self._stats.max_concurrent = max(self._stats.max_concurrent, self._in_flight)
        t0 = time.perf_counter()
        box: list = []
        try:
            yield box
        finally:
            seconds = time.perf_counter() - t0
            parts = box[0] if box and isinstance(box[0], list) else box
            nbytes = sum(len(p) for p in parts if isinstance(p, bytes | bytearray | memoryview))
            with self._lock:
                self._in_flight -= 1
                self._stats.record(nbytes, seconds, ranges=max(len(parts), 1))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kw: Any) -> bytes:
        with self._request() as box:
            box.append(self._fs.cat_file(path, start=start, end=end, **kw))
        return box[0]

    def cat_ranges(self, paths: list[str], starts: list[int], ends: list[int], **kw: Any) -> list:
        with self._request() as box:
            box.append(self._fs.cat_ranges(paths, starts, ends, **kw))
        return box[0]

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None, **kw: Any):
        with self._request() as box:
            box.append(await self._fs._cat_file(path, start=start, end=end, **kw))
        return box[0]

    async def _cat_ranges(self, paths: list[str], starts: list[int], ends: list[int], **kw: Any) -> list:
        with self._request() as box:
            box.append(await self._fs._cat_ranges(paths, starts, ends, **kw))
        return box[0]


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically: locally a temp file in the same directory, then rename; on an object
    store (a shared staging prefix) one PUT, which is atomic per object."""
    if not is_local(path):
        fs, remote = filesystem(path)
        fs.pipe_file(remote, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def check_complete(url: str, *, required: bool = False) -> None:
    """Refuse a directory that a running or failed object-store write holds (`_COMMITTING` present)
    and, with `required` (a stage reading another stage's output), one without `_SUCCESS`, the
    marker every colliderflow output gets last. Without `required`, directories written by other
    tools (no marker at all) are accepted."""
    fs, path = filesystem(url)
    path = path.rstrip("/")
    fs.invalidate_cache(path)
    if fs.exists(f"{path}/{COMMITTING_MARKER}"):
        raise BadInputError(
            url, f"incomplete output ({COMMITTING_MARKER} present: its writer is running or failed; rerun it)"
        )
    if required and fs.isdir(path) and not fs.exists(f"{path}/{SUCCESS_MARKER}"):
        raise BadInputError(
            url, f"incomplete output (no {SUCCESS_MARKER}: its writer is running or failed; rerun it)"
        )
