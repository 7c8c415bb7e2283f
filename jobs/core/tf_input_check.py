"""What train and evaluate check of their inputs before TensorFlow starts (seconds, not the minute
TensorFlow, the strategy and the model take): each fact about an input that would otherwise fail the
run after that minute, or worse, train on a half-written set.

- the store answers and the path exists (store_errors, probe_store);
- a `train/` or `test/` folder of a stage output (its parent holds the stage's sidecar files) is read
  only when that output is complete (`_SUCCESS`: a copy without it or a run still writing is refused);
- the first data file is not empty, is a TFRecord (its first record's length checksum) holding the
  contract's features, or a Parquet file with the contract's columns;
- a model file is a Keras archive (a zip holding config.json).

The contract's names come from jobs.dltrigger_schema. TFRecord framing: jobs.core.tfrecord_framing.
"""

from __future__ import annotations

import posixpath
import zipfile
import zlib

import pyarrow.parquet as pq

from jobs.core.commit import OWNER_MARKER
from jobs.core.errors import BadInputError
from jobs.core.storage import (
    COMMITTING_MARKER,
    METRICS_FILE,
    SUMMARY_FILE,
    check_complete,
    filesystem,
    is_local,
)
from jobs.core.store_probe import probe_store, store_errors
from jobs.core.tf_staging import (
    FORMAT_SUFFIXES,
    PARQUET_SUFFIXES,
    TFRECORD_SUFFIXES,
    file_format,
    list_data_files,
)
from jobs.core.tfrecord_framing import broken_file, first_record
from jobs.dltrigger_schema import GRU_COLUMN, HLF_COLUMN, LABEL_COLUMN, SCALER_FILE

CONTRACT = (HLF_COLUMN, GRU_COLUMN, LABEL_COLUMN)
SPLITS = ("train", "test")
# what a stage output holds beside its splits (markers and sidecars)
STAGE_FILES = {OWNER_MARKER, COMMITTING_MARKER, METRICS_FILE, SUMMARY_FILE, SCALER_FILE}
HEAD_BYTES = 1 << 20  # enough for one record (801 x 19 floats are 61 kB)


def check_dataset(url: str, option: str, fmt: str = "auto") -> None:
    """Refuse, naming `option` and the URL, an input train/evaluate could not read."""
    source = f"{option} {url}"
    probe_store(url, source=source)
    with store_errors(url, source):
        _check_stage_complete(url, source)
        files = _data_files(url, source, fmt)
        first = files[0]
        fs, path = filesystem(first)
        if fs.size(path) == 0:
            raise BadInputError(f"{option} {first}", "is an empty file (0 bytes)")
        if file_format(first) == "tfrecord" or fmt == "tfrecord":
            _check_tfrecord(first, option)
            _check_framing(files, option)
        else:
            _check_parquet(first, option)


def _check_framing(files: list[str], option: str) -> None:
    """Every local, uncompressed shard walked header to header (a seek per record): TensorFlow reads a
    shard cut short inside a header as a shorter one, silently, and one cut inside a record as a
    DataLossError naming no file. Compressed and remote shards are walked only when TensorFlow
    reports a loss (jobs.core.tf_dataset.data_loss_named)."""
    plain = [f for f in files if is_local(f) and not f.endswith(".gz")]
    found = broken_file(plain)
    if found:
        raise BadInputError(f"{option} {found[0]}", f"truncated or corrupt TFRecord: {found[1]}")


def check_model(url: str, option: str = "--model") -> None:
    """Refuse a model that is missing or not a Keras archive, before TensorFlow loads it."""
    source = f"{option} {url}"
    probe_store(url, source=source)
    with store_errors(url, source):
        fs, path = filesystem(url)
        if not fs.isfile(path):
            raise BadInputError(source, "no such file (expected model.keras written by jobs.train)")
        with fs.open(path, "rb") as f:
            try:
                with zipfile.ZipFile(f) as archive:
                    names = set(archive.namelist())
            except (zipfile.BadZipFile, OSError):
                names = set()
        if "config.json" not in names:
            raise BadInputError(source, "is not a Keras model file (.keras archive) written by jobs.train")


def _check_stage_complete(url: str, source: str) -> None:
    """A `train`/`test` folder of a stage output (its parent holds a stage's sidecar files) is read
    only when that output is complete (`_SUCCESS`); a copy without it, or one still being written, is
    refused, naming the option and the stage folder. Folders no stage wrote are read as they are."""
    fs, path = filesystem(url)
    parent, name = posixpath.split(path.rstrip("/"))
    if name not in SPLITS or not parent or not fs.isdir(f"{parent}/{name}"):
        return
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(parent, detail=False)}
    if not names & STAGE_FILES:
        return
    stage = url.rstrip("/").rsplit("/", 1)[0]
    try:
        check_complete(stage, required=True)
    except BadInputError as exc:
        raise BadInputError(source, f"its stage folder {stage} is an {exc.problem}") from None


def _data_files(url: str, source: str, fmt: str) -> list[str]:
    suffixes = FORMAT_SUFFIXES.get(fmt)
    try:
        return list_data_files(url, suffixes or TFRECORD_SUFFIXES + PARQUET_SUFFIXES)
    except BadInputError as exc:
        raise BadInputError(source, exc.problem) from None


def _head(url: str) -> bytes:
    """The first bytes of a file, decompressed if it is gzip (.tfrecord.gz)."""
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        raw = f.read(HEAD_BYTES)
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    try:
        return zlib.decompressobj(31).decompress(raw, HEAD_BYTES)
    except zlib.error as exc:
        raise BadInputError(url, f"is not a gzip-compressed TFRecord file ({exc})") from None


def _check_tfrecord(url: str, option: str) -> None:
    record = first_record(_head(url))
    if record is None:
        raise BadInputError(f"{option} {url}", "is not a TFRecord file (its first record header is invalid)")
    missing = [name for name in CONTRACT if name.encode() not in record]
    if missing:
        raise BadInputError(
            f"{option} {url}",
            f"lacks feature(s) {', '.join(missing)} of the TFRecord contract (jobs.tfrecords)",
        )


def _check_parquet(url: str, option: str) -> None:
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            names = set(pq.read_schema(f).names)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends for a file that is no Parquet
        raise BadInputError(
            f"{option} {url}", f"is not a Parquet file ({str(exc).splitlines()[0][:150]})"
        ) from None
    missing = [name for name in CONTRACT if name not in names]
    if missing:
        raise BadInputError(
            f"{option} {url}",
            f"lacks column(s) {', '.join(missing)} of the prepared-set contract (jobs.prepare)",
        )
