"""tf.data readers for the prepared DL-trigger sets, from TFRecord shards (jobs.tfrecords) or straight
from the Parquet sets (jobs.prepare). Both yield the same elements:
``({"HLF_input": float32[14], "GRU_input": float32[801, 19]}, encoded_label float32[3])``, with
``"n_particles": int64[]`` added to the features dict on request, so training code does not care
which format it reads, nor which particle layout is stored (jobs.dltrigger_schema.PARTICLE_LAYOUTS):
a ragged set (only the real rows stored) is zero-padded back to 801 rows here, at batch time. This
module imports TensorFlow; the writers (jobs.tfrecords, jobs.tfrecords.example) do not."""

from __future__ import annotations

# isort: off
from jobs.core import tf_env  # noqa: F401  (before TensorFlow)
# isort: on

import json
import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from jobs.core.errors import BadInputError
from jobs.core.listing import GLOB_CHARS
from jobs.core.storage import SUMMARY_FILE, filesystem, is_local
from jobs.core.tensors import ShapeError, nested_to_numpy, particles_to_numpy
from jobs.core.tf_staging import assign_shards, format_files
from jobs.dltrigger_schema import (
    COUNT_COLUMN,
    GRU_COLUMN,
    HLF_COLUMN,
    LABEL_COLUMN,
    LAYOUT_SUMMARY_KEY,
    N_CLASSES,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    SHAPES,
)


def _feature_spec(include_n_particles: bool, layout: str | None) -> dict:
    """The parse spec; `layout` None (unknown) parses GRU_input as a variable-length list, which reads
    both layouts (a padded record simply holds all 801 rows)."""
    gru = (
        tf.io.FixedLenFeature([N_PARTICLES, N_PARTICLE_FEATURES], tf.float32)
        if layout == "padded"
        else tf.io.RaggedFeature(tf.float32)
    )
    spec = {
        HLF_COLUMN: tf.io.FixedLenFeature([N_HLF], tf.float32),
        GRU_COLUMN: gru,
        LABEL_COLUMN: tf.io.FixedLenFeature([N_CLASSES], tf.float32),
    }
    if include_n_particles:
        spec[COUNT_COLUMN] = tf.io.FixedLenFeature([], tf.int64)
    elif layout != "padded":  # to check a record's rows; -1: no count, so it must be a padded record
        spec[COUNT_COLUMN] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    return spec


def _pad_particles(features: dict, batched: bool) -> dict:
    """GRU_input parsed as a flat variable-length float list (ragged layout) -> (…, 801, 19), zeros
    after the real rows. A record must hold 801 rows (padded) or exactly n_particles rows (ragged), at
    most 801: anything else fails here instead of being cut or padded into a wrong event."""
    gru = features[GRU_COLUMN]
    if batched:  # a RaggedTensor (batch, None) of floats
        rows = tf.RaggedTensor.from_row_lengths(
            tf.reshape(gru.flat_values, [-1, N_PARTICLE_FEATURES]),
            gru.row_lengths() // N_PARTICLE_FEATURES,
        )
        dense = rows.to_tensor(shape=[None, N_PARTICLES, N_PARTICLE_FEATURES])
        n = tf.cast(gru.row_lengths(), tf.int64)
    else:
        rows = tf.reshape(gru, [-1, N_PARTICLE_FEATURES])
        n = tf.cast(tf.size(gru), tf.int64)
        dense = tf.pad(rows, [[0, tf.maximum(N_PARTICLES - tf.shape(rows)[0], 0)], [0, 0]])
        dense = tf.ensure_shape(dense, [N_PARTICLES, N_PARTICLE_FEATURES])
    padded, count = N_PARTICLES * N_PARTICLE_FEATURES, features[COUNT_COLUMN] * N_PARTICLE_FEATURES
    check = tf.debugging.Assert(
        tf.reduce_all((n <= padded) & ((n == padded) | (n == count))),
        [f"{GRU_COLUMN} must hold {N_PARTICLES} x {N_PARTICLE_FEATURES} floats (padded) or "
         f"{COUNT_COLUMN} x {N_PARTICLE_FEATURES} (ragged), at most {N_PARTICLES} rows"],
    )  # fmt: skip
    with tf.control_dependencies([check]):
        return {**features, GRU_COLUMN: tf.identity(dense)}


def tfrecord_layout(url: str) -> str | None:
    """The particle layout jobs.tfrecords recorded in the _summary.json beside split directory `url`;
    None when there is none (a staged copy, a glob, a single shard): then the reader parses
    GRU_input as a variable-length list, which is right for both layouts."""
    fs, path = filesystem(url)
    path = path.rstrip("/")
    if GLOB_CHARS & set(path) or not fs.isdir(path):
        return None
    try:
        with fs.open(f"{os.path.dirname(path)}/{SUMMARY_FILE}", "r") as f:
            layout = json.load(f).get(LAYOUT_SUMMARY_KEY, "padded")  # sets from before layouts: padded
    except (OSError, ValueError, AttributeError):
        return None
    return layout if layout in ("padded", "ragged") else None


def _shard_files(files: list[str], shard: tuple[int, int] | None, source: str) -> list[str]:
    """Input sharding for multi-worker training, shard = (index, count): this worker's files only
    (`tf_staging.assign_shards`; fewer files than workers is refused)."""
    if shard is None:
        return files
    return assign_shards(files, shard[0], shard[1], source)


def _local_only(url: str, files: list[str]) -> None:
    """TensorFlow opens local files only: an object URL must be staged in first (jobs.core.tf_staging).
    Said plainly here, instead of TensorFlow's `Unimplemented` surfacing as a schema mismatch."""
    remote = [f for f in files if not is_local(f)]
    if remote:
        scheme = remote[0].split("://", 1)[0]
        raise BadInputError(
            url, f"TensorFlow cannot open {scheme}:// objects itself; stage the shards in first "
            "(jobs.core.tf_staging.stage_in)"
        )  # fmt: skip


def _compression_type(files: list[str], compression: str | None) -> str:
    """TFRecordDataset's compression_type: 'auto' looks at the suffixes (all files must agree)."""
    if compression is None or compression.lower() == "none":
        return ""
    if compression.lower() == "gzip":
        return "GZIP"
    if compression != "auto":
        raise ValueError(f"compression must be 'auto', 'gzip', 'none' or None, got {compression!r}")
    gz = {f.endswith(".gz") for f in files}
    if len(gz) > 1:
        raise BadInputError(files[0], "mix of .gz and uncompressed shards; pass compression explicitly")
    return "GZIP" if gz.pop() else ""


def _to_element(features: dict[str, tf.Tensor], include_n_particles: bool):
    x = {HLF_COLUMN: features[HLF_COLUMN], GRU_COLUMN: features[GRU_COLUMN]}
    if include_n_particles:
        x[COUNT_COLUMN] = features[COUNT_COLUMN]
    return x, features[LABEL_COLUMN]


def read_tfrecords(
    url: str,
    *,
    compression: str | None = "auto",
    batch_size: int | None = None,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    include_n_particles: bool = False,
    num_parallel_calls=tf.data.AUTOTUNE,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Decoded elements from a directory (or glob) of TFRecord shards. Shards are read interleaved in
    parallel; with batch_size the serialized records are batched before parsing (one vectorised
    parse per batch, much cheaper than one per record); always prefetched. The particle layout comes
    from the set's _summary.json (tfrecord_layout), else each record is read as it is stored."""
    files = _shard_files(format_files(url, "tfrecord"), shard, url)
    _local_only(url, files)
    ds = tf.data.TFRecordDataset(
        files, compression_type=_compression_type(files, compression), num_parallel_reads=num_parallel_calls
    )
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    layout = tfrecord_layout(url)
    spec = _feature_spec(include_n_particles, layout)

    def parse(serialized, batched: bool):
        features = (tf.io.parse_example if batched else tf.io.parse_single_example)(serialized, spec)
        if layout != "padded":
            features = _pad_particles(features, batched)
        return _to_element(features, include_n_particles)

    if batch_size:
        ds = ds.batch(batch_size).map(lambda s: parse(s, True), num_parallel_calls=num_parallel_calls)
    else:
        ds = ds.map(lambda s: parse(s, False), num_parallel_calls=num_parallel_calls)
    return ds.prefetch(tf.data.AUTOTUNE)


def iter_parquet_chunks(
    url: str,
    *,
    chunk_rows: int = 1024,
    include_n_particles: bool = False,
    shard: tuple[int, int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """numpy chunks of a prepared Parquet set, file by file in sorted order (pyarrow, no TensorFlow);
    a ragged file's particle rows are zero-padded to 801 here."""
    import pyarrow.parquet as pq

    columns = [HLF_COLUMN, GRU_COLUMN, LABEL_COLUMN] + ([COUNT_COLUMN] if include_n_particles else [])
    files = _shard_files(format_files(url, "parquet"), shard, url)
    for f in files:
        fs, path = filesystem(f)
        with fs.open(path, "rb") as handle:
            pf = pq.ParquetFile(handle)
            missing = [c for c in columns if c not in pf.schema_arrow.names]
            if missing:
                raise BadInputError(f, f"lacks column(s) {', '.join(missing)}")
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
                try:
                    out = {
                        HLF_COLUMN: nested_to_numpy(batch.column(HLF_COLUMN), SHAPES[HLF_COLUMN]),
                        GRU_COLUMN: particles_to_numpy(
                            batch.column(GRU_COLUMN), N_PARTICLES, N_PARTICLE_FEATURES
                        ),
                        LABEL_COLUMN: nested_to_numpy(batch.column(LABEL_COLUMN), SHAPES[LABEL_COLUMN]),
                    }
                except ShapeError as exc:
                    raise BadInputError(f, str(exc)) from None
                if include_n_particles:
                    out[COUNT_COLUMN] = batch.column(COUNT_COLUMN).to_numpy().astype(np.int64)
                yield out


def read_parquet_dataset(
    url: str,
    *,
    batch_size: int | None = None,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    include_n_particles: bool = False,
    chunk_rows: int = 1024,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """The Parquet equivalent of read_tfrecords (same element structure), reading chunks of
    `chunk_rows` rows through pyarrow in a generator and unbatching them inside tf.data."""
    _shard_files(format_files(url, "parquet"), shard, url)  # fail now, not at the first iteration
    signature = {
        HLF_COLUMN: tf.TensorSpec([None, N_HLF], tf.float32),
        GRU_COLUMN: tf.TensorSpec([None, N_PARTICLES, N_PARTICLE_FEATURES], tf.float32),
        LABEL_COLUMN: tf.TensorSpec([None, N_CLASSES], tf.float32),
    }
    if include_n_particles:
        signature[COUNT_COLUMN] = tf.TensorSpec([None], tf.int64)
    ds = tf.data.Dataset.from_generator(
        lambda: iter_parquet_chunks(
            url, chunk_rows=chunk_rows, include_n_particles=include_n_particles, shard=shard
        ),
        output_signature=signature,
    )
    ds = ds.unbatch()
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda f: _to_element(f, include_n_particles), num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
