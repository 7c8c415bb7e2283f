"""tf.data input pipelines for training and evaluating the Inclusive Classifier on a prepared set
(TFRecord shards or Parquet, through jobs.core.tf_readers), with optional length bucketing.

Bucketing: events are grouped by their real particle count (`n_particles`) with
`bucket_by_sequence_length`, each event's particle list is cut to its real rows and each batch is
zero-padded only to its own longest list, so the GRU runs over (about) the real length instead of
801 steps. This is exact, not an approximation, for prepared sets in global-scaling mode: real rows
come first and padded rows are exactly 0, so Masking(0.) already skipped the padding and a masked GRU
returns the state at the last real row whatever the padded length. It is wrong for the reference
per-event scaling (padded rows are not 0 there), which `check_bucketing_input` detects.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from jobs.core.errors import BadInputError, UsageError
from jobs.core.storage import GLOB_CHARS, SUMMARY_FILE, filesystem, is_local
from jobs.core.tf_readers import (
    TFRECORD_SUFFIXES,
    _compression_type,
    _list_files,
    _local_only,
    _shard_files,
    detect_format,
    iter_parquet_chunks,
    read_parquet_dataset,
    read_tfrecords,
)
from jobs.core.tf_staging import Staged, assign_shards, stage_in
from jobs.dltrigger_schema import COUNT_COLUMN, GRU_COLUMN, HLF_COLUMN, N_PARTICLES

FORMATS = ("auto", "tfrecord", "parquet")
# particle-count bucket edges: fine where real events are dense (tens to a few hundred rows)
BUCKET_BOUNDARIES = (8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512, 640)


def resolve_format(url: str, fmt: str = "auto") -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return detect_format(url) if fmt == "auto" else fmt


def _read(url: str, fmt: str, **kwargs) -> tf.data.Dataset:
    if fmt == "tfrecord":
        return read_tfrecords(url, **kwargs)
    kwargs.pop("num_parallel_calls", None)
    return read_parquet_dataset(url, **kwargs)


def probe(url: str, fmt: str, need_n_particles: bool = False) -> dict[str, np.ndarray]:
    """Decode the first event now, so that a wrong schema is a clear error naming the input instead
    of a TensorFlow stack trace in the middle of model.fit."""
    if fmt == "parquet":
        try:
            chunk = next(iter_parquet_chunks(url, chunk_rows=1, include_n_particles=need_n_particles))
        except StopIteration:
            raise BadInputError(url, "holds no events") from None
        return chunk
    ds = read_tfrecords(url, include_n_particles=need_n_particles).take(1)
    try:
        elements = list(ds.as_numpy_iterator())
    except tf.errors.OpError as exc:
        problem = str(exc.message).splitlines()[0][:300]
        missing = need_n_particles and COUNT_COLUMN in problem
        hint = f"no int64 {COUNT_COLUMN!r} feature, which --bucketing needs" if missing else "bad record"
        raise BadInputError(
            url, f"does not match the prepared-set TFRecord schema ({hint}): {problem}"
        ) from None
    if not elements:
        raise BadInputError(url, "holds no events")
    x, y = elements[0]
    return {**{k: v[None] for k, v in x.items()}, "encoded_label": y[None]}


def check_bucketing_input(url: str, fmt: str, n_events: int = 256) -> None:
    """--bucketing needs real rows first and exactly-zero padding (global-scaling prepared sets)."""
    probe(url, fmt, need_n_particles=True)
    ds = _read(url, fmt, batch_size=n_events, include_n_particles=True).take(1)
    x, _ = next(iter(ds.as_numpy_iterator()))
    n = x[COUNT_COLUMN]
    if (n < 1).any() or (n > N_PARTICLES).any():
        raise BadInputError(url, f"{COUNT_COLUMN} outside 1..{N_PARTICLES}")
    padded = np.arange(N_PARTICLES)[None, :] >= n[:, None]
    if np.abs(x[GRU_COLUMN]).sum(axis=2)[padded].any():
        raise BadInputError(
            url,
            "particle rows beyond n_particles are not zero (reference per-event scaling?); "
            "--bucketing needs a prepared set in global-scaling mode",
        )


def data_files(url: str, fmt: str) -> list[str]:
    """The sorted data files (URLs) of a prepared set in format `fmt`."""
    return _list_files(url, TFRECORD_SUFFIXES if fmt == "tfrecord" else (".parquet",))


def worker_input(
    url: str, fmt: str, index: int, count: int, scratch: str
) -> tuple[str, tuple[int, int] | None, Staged | None]:
    """What worker `index` of `count` reads: (URL, shard, staged). A local set is read in place with
    shard (index, count) (a shared disk); an object-store set has the worker's shards staged into
    `scratch` and is read from there whole. Fewer shards than workers is refused either way."""
    mine = assign_shards(data_files(url, fmt), index, count, url)
    if is_local(url):
        return url, ((index, count) if count > 1 else None), None
    staged = stage_in(mine, scratch, url)
    return staged.directory, None, staged


def _drop_count(x: dict[str, tf.Tensor], y: tf.Tensor):
    return {HLF_COLUMN: x[HLF_COLUMN], GRU_COLUMN: x[GRU_COLUMN]}, y


def make_dataset(
    url: str,
    fmt: str,
    *,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    bucketing: bool = False,
    max_particles: int | None = None,
    shard: tuple[int, int] | None = None,
    keep_n_particles: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of ({"HLF_input", "GRU_input"}, encoded_label) for model.fit / predict.

    Unbucketed: fixed (batch, 801 or max_particles, 19) batches, the reference set-up.
    Bucketed: (batch, L, 19) with L the batch's longest real particle list (<= max_particles).
    shard=(index, count) gives one worker its disjoint part of the input; repeat cycles through it
    (before batching, so that the pass boundary leaves no partial batches).
    """
    if max_particles is not None and not 1 <= max_particles <= N_PARTICLES:
        raise UsageError(f"--max-particles must be in 1..{N_PARTICLES}, got {max_particles}")
    if not bucketing:
        ds = _read(
            url,
            fmt,
            batch_size=batch_size,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            shard=shard,
            include_n_particles=keep_n_particles,
        )
        if repeat:
            ds = ds.unbatch().repeat().batch(batch_size)
        if max_particles is not None and max_particles < N_PARTICLES:
            ds = ds.map(lambda x, y: ({**x, GRU_COLUMN: x[GRU_COLUMN][:, :max_particles]}, y))
        return ds if keep_n_particles else ds.map(_drop_count)

    limit = max_particles or N_PARTICLES
    # parse in chunks (one vectorised parse per chunk), then work per event
    ds = _read(
        url,
        fmt,
        batch_size=min(batch_size, 256),
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        shard=shard,
        include_n_particles=True,
    ).unbatch()
    if repeat:
        ds = ds.repeat()

    def cut(x, y):
        n = tf.clip_by_value(tf.cast(x[COUNT_COLUMN], tf.int32), 1, limit)
        return {**x, GRU_COLUMN: x[GRU_COLUMN][:n], COUNT_COLUMN: n}, y

    ds = ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE)
    boundaries = [b for b in BUCKET_BOUNDARIES if b < limit]
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda x, y: x[COUNT_COLUMN],
        bucket_boundaries=[b + 1 for b in boundaries],  # bucket i holds lengths <= boundaries[i]
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        pad_to_bucket_boundary=False,
    )
    if not keep_n_particles:
        ds = ds.map(_drop_count)
    return ds.prefetch(tf.data.AUTOTUNE)


def count_from_summary(url: str) -> int | None:
    """The record count jobs.tfrecords wrote for split DIR/<split> in DIR/_summary.json, if any."""
    fs, path = filesystem(url)
    path = path.rstrip("/")
    if GLOB_CHARS & set(path):
        return None
    summary = f"{os.path.dirname(path)}/{SUMMARY_FILE}"
    try:
        with fs.open(summary, "r") as f:
            records = json.load(f)["splits"][os.path.basename(path)]["records"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return int(records) if isinstance(records, int) and records > 0 else None


def count_events(url: str, fmt: str, shard: tuple[int, int] | None = None) -> int:
    """Events in a prepared set (or, with shard, in that worker's files): Parquet footers (cheap), the
    _summary.json jobs.tfrecords writes beside the split directories (whole sets only), or else one
    pass over the TFRecord framing (no parsing). Multi-worker training needs it to give every worker
    the same number of steps."""
    files = _shard_files(data_files(url, fmt), shard, url)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        total = 0
        for f in files:
            fs, path = filesystem(f)
            with fs.open(path, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return total
    known = count_from_summary(url) if shard is None else None
    if known is not None:
        return known
    _local_only(url, files)
    ds = tf.data.TFRecordDataset(
        files, compression_type=_compression_type(files, "auto"), num_parallel_reads=tf.data.AUTOTUNE
    )
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
