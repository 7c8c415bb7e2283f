"""tf.data input pipelines for training and evaluating the Inclusive Classifier on a prepared set
(TFRecord shards or Parquet, through jobs.core.tf_readers), with optional length bucketing.

Bucketing: the (shuffled) events are taken in windows of WINDOW_BATCHES batches, each window is
sorted by real particle count (`n_particles`) and cut into batches, each batch zero-padded only to its
own longest list, so the GRU runs over (about) the real length instead of 801 steps; training
shuffles the batches and sorts by the length's quantile within each class (every batch holds the
classes in the window's proportions, see _sort_window). This is exact, not an approximation, for
prepared sets in global-scaling mode: real rows come first and padded rows are exactly 0, so
Masking(0.) already skipped the padding and a masked GRU returns the state at the last real row
whatever the padded length. It is wrong for the reference per-event scaling (padded rows are not 0
there), which `check_bucketing_input` detects.
"""

from __future__ import annotations

# isort: off
from jobs.core import tf_env  # noqa: F401  (before TensorFlow)
# isort: on

import contextlib
import json
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from jobs.core.errors import BadInputError, UsageError, first_line
from jobs.core.listing import GLOB_CHARS
from jobs.core.storage import SUMMARY_FILE, filesystem, is_local
from jobs.core.tf_readers import (
    _compression_type,
    _local_only,
    _shard_files,
    iter_parquet_chunks,
    read_parquet_dataset,
    read_tfrecords,
)
from jobs.core.tf_staging import (
    Staged,
    assign_shards,
    detect_format,
    format_files,
    stage_in,
)
from jobs.core.tfrecord_framing import broken_file
from jobs.dltrigger_schema import COUNT_COLUMN, GRU_COLUMN, HLF_COLUMN, N_PARTICLES

FORMATS = ("auto", "tfrecord", "parquet")
# length-sorted windows of this many batches: the longer, the tighter each batch's lengths
WINDOW_BATCHES = 8


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
    return format_files(url, fmt)


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


@contextlib.contextmanager
def data_loss_named(sets: dict[str, str], fmt: dict[str, str]) -> Iterator[None]:
    """Around reading TFRecord sets (option -> local URL, option -> format): TensorFlow's DataLossError
    names no file; the sets' framing is walked to find the truncated or corrupt one, which becomes a
    one-line bad input naming it."""
    try:
        yield
    except tf.errors.DataLossError as exc:
        for option, url in sets.items():
            if fmt.get(option) != "tfrecord" or not is_local(url):
                continue
            found = broken_file(data_files(url, "tfrecord"))
            if found:
                raise BadInputError(
                    f"{option} {found[0]}", f"truncated or corrupt TFRecord: {found[1]}"
                ) from None
        raise BadInputError(" / ".join(sets), f"corrupt TFRecord data ({first_line(exc)[:200]})") from None


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
    mix_classes: bool = False,
) -> tf.data.Dataset:
    """Batches of ({"HLF_input", "GRU_input"}, encoded_label) for model.fit / predict.

    Unbucketed: fixed (batch, 801 or max_particles, 19) batches, the reference set-up.
    Bucketed: (batch, L, 19) with L the batch's longest real particle list (<= max_particles);
    mix_classes (training) keeps every batch's class mix that of its window.
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
    window = batch_size * WINDOW_BATCHES
    if repeat:  # cycle before windowing: the pass boundary leaves no partial window
        ds = _read(url, fmt, batch_size=min(batch_size, 256), shuffle_buffer=shuffle_buffer, seed=seed,
                   shard=shard, include_n_particles=True).unbatch().repeat().batch(window)  # fmt: skip
    else:  # one vectorised parse per window
        ds = _read(url, fmt, batch_size=window, shuffle_buffer=shuffle_buffer, seed=seed, shard=shard,
                   include_n_particles=True)  # fmt: skip
    ds = ds.map(lambda x, y: _sort_window(x, y, limit, mix_classes), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.flat_map(lambda x, y: _split_window(x, y, batch_size))
    if shuffle_buffer > 0:  # batches of one window are ordered by length: interleave the windows
        ds = ds.shuffle(2 * WINDOW_BATCHES, seed=seed, reshuffle_each_iteration=True)
    if not keep_n_particles:
        ds = ds.map(_drop_count)
    return ds.prefetch(tf.data.AUTOTUNE)


def _sort_window(x: dict[str, tf.Tensor], y: tf.Tensor, limit: int, mix_classes: bool):
    """A window of events sorted by real particle count, cut to its longest list (<= limit).

    mix_classes sorts by the length's quantile within its own class instead, so that every batch cut
    from the window holds the classes in the window's proportions: when one class has longer lists,
    a plain length sort makes near single-class batches, whose gradients pull the output layer
    towards one class per step (bucketed AUC then lagged unbucketed after the same epochs)."""
    n = tf.clip_by_value(tf.cast(x[COUNT_COLUMN], tf.int32), 1, limit)
    if mix_classes:
        cls = tf.argmax(y, axis=1, output_type=tf.int32)
        by_class = tf.argsort(cls * (limit + 1) + n, stable=True)  # class-major, then by length
        sorted_cls = tf.gather(cls, by_class)
        counts = tf.math.bincount(cls, minlength=y.shape[-1] or 1)
        position = tf.range(tf.shape(n)[0]) - tf.gather(tf.cumsum(counts, exclusive=True), sorted_cls)
        quantile = (tf.cast(position, tf.float32) + 0.5) / tf.cast(tf.gather(counts, sorted_cls), tf.float32)
        order = tf.gather(by_class, tf.argsort(quantile, stable=True))
    else:
        order = tf.argsort(n, stable=True)
    gru = x[GRU_COLUMN][:, : tf.reduce_max(n)]
    x = {**x, GRU_COLUMN: tf.gather(gru, order), HLF_COLUMN: tf.gather(x[HLF_COLUMN], order),
         COUNT_COLUMN: tf.gather(n, order)}  # fmt: skip
    return x, tf.gather(y, order)


def _split_window(x: dict[str, tf.Tensor], y: tf.Tensor, batch_size: int) -> tf.data.Dataset:
    """A sorted window cut into consecutive batches, each cut to its own longest list."""
    size = tf.shape(y)[0]

    def batch(i):
        i = tf.cast(i, tf.int32)
        lo, hi = i * batch_size, tf.minimum((i + 1) * batch_size, size)
        n = x[COUNT_COLUMN][lo:hi]
        part = {**{k: v[lo:hi] for k, v in x.items()}, GRU_COLUMN: x[GRU_COLUMN][lo:hi, : tf.reduce_max(n)]}
        return part, y[lo:hi]

    return tf.data.Dataset.range(tf.cast((size + batch_size - 1) // batch_size, tf.int64)).map(batch)


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
