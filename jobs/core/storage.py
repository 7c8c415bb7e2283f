"""One storage layer for every stage: fsspec URLs (local, s3://, oci://, root://) to filesystems with
the store's options from the environment, and how a reader knows an output is complete. Beside it:
probing a store before any work (jobs.core.store_probe), listing inputs (jobs.core.listing), metering
reads (jobs.core.metering); how outputs get written: jobs.core.commit.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.parse
import uuid
from typing import Any

import fsspec

from jobs.core.errors import BadInputError, UsageError, first_line
from jobs.core.locations import LOCAL_PROTOCOLS, SUPPORTED_PROTOCOLS, local_path, protocol

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
    protocol = url_protocol(url)
    if protocol in LOCAL_PROTOCOLS:
        return
    if protocol not in SUPPORTED_PROTOCOLS:
        raise BadInputError(source or url, f"storage protocol {protocol}:// is not supported; {STORES_HINT}")
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise BadInputError(
            source or url, f"storage protocol {protocol}:// is not installed here ({first_line(exc)})"
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
    return protocol(url) in LOCAL_PROTOCOLS


def url_protocol(url: str) -> str:
    """The protocol fsspec would open `url` with (jobs.core.locations.protocol)."""
    return protocol(url)


def check_regular_files(paths: list[str]) -> list[str]:
    """Refuse, before any read, a local input that is not a regular file: a FIFO named `*.root` blocks
    its reader forever, a device or socket reads endlessly or fails mid-run. Returns `paths`."""
    for path in paths:
        if not is_local(path):
            continue
        try:
            mode = os.stat(local_path(path)).st_mode
        except FileNotFoundError:
            continue  # reported by the reader (or skipped by a skip policy)
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            if stat.S_ISDIR(mode):
                kind = "a directory"
            raise BadInputError(path, f"is {kind}, not a regular file: only regular files are read as data")
    return paths


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
