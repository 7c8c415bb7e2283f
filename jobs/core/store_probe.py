"""Fail fast and in one line when a store cannot be used: a probe before any work (an S3 endpoint that
is down, missing credentials, a missing bucket), and the storage backends' exceptions turned into
one-line errors that name the URL and the setting to change."""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from collections.abc import Iterator

import fsspec

from jobs.core.errors import BadInputError, first_line
from jobs.core.storage import check_protocol, filesystem, is_local, storage_options, url_protocol

PROBE_TIMEOUT_S = 5
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ClientConnectorError"}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError"}


def _line(exc: BaseException) -> str:
    return first_line(exc) or type(exc).__name__


def storage_problem(exc: BaseException, url: str) -> str | None:
    """What a storage backend's exception says about reaching `url`'s store, in one line (None when
    it is about something else): the SDKs' own messages name neither the setting to change nor, for
    XRootD, the server."""
    names = {c.__name__ for c in type(exc).__mro__}
    protocol = url_protocol(url)
    if names & _NO_CREDENTIALS:
        return "no credentials for the object store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if names & _UNREACHABLE:
        endpoint = storage_options(url).get("endpoint_url") or "the default endpoint"
        return f"cannot reach the object store at {endpoint} ({_line(exc)})"
    if protocol == "root" and isinstance(exc, OSError) and "[FATAL]" in str(exc):
        host = urllib.parse.urlsplit(url).netloc
        detail = str(exc)[str(exc).index("[FATAL]") :].splitlines()[0][:200]
        return f"cannot reach the XRootD server {host} ({detail})"
    if isinstance(exc, PermissionError) and not is_local(url):
        return f"access denied ({_line(exc)}); check the credentials and the bucket's policy"
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
            problem = _line(exc)
        if problem is None:
            raise
        raise BadInputError(source or url, problem) from None


def _probe_filesystem(url: str) -> fsspec.AbstractFileSystem:
    """A private S3 filesystem that tries once with short timeouts: the SDK's and s3fs's retries (with
    backoff) would take tens of seconds to report an endpoint that is down."""
    fs = fsspec.filesystem(
        url_protocol(url),
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
    if url_protocol(url) not in ("s3", "s3a"):
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
