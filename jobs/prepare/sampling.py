"""The per-event decisions of jobs.prepare, as Spark DataFrame plans on narrow columns: which events
survive the undersampling, which go to the test split, where they land in the shuffle, and which
rows of which input file each task has to act on. Every decision is a seeded hash of the event
identity (source_file, entry), so it does not depend on partitioning, file order or retries; the
particle lists are never touched here (the tasks in jobs.prepare.tasks read them)."""

from __future__ import annotations

import os

from jobs.core.errors import BadInputError
from jobs.core.storage import filesystem, is_local
from jobs.dltrigger_schema import (
    CLASS_TITLES,
    ENTRY_COLUMN,
    FEATURES_HLF_COLUMN,
    FEATURES_LABEL_COLUMN,
    FEATURES_PARTICLES_COLUMN,
    N_CLASSES,
    SOURCE_FILE_COLUMN,
)

FILE = "_file"  # the Parquet file a row came from (Spark's _metadata.file_path)
_ROW = "_row"  # its row index in that file (Spark's _metadata.row_index)


def _check_schema(schema, url: str) -> None:
    """The ingestion contract, with the culprit named: column present and of a usable type."""
    from pyspark.sql import types as T

    floats = (T.FloatType, T.DoubleType)
    ints = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)

    def is_array_of(dt, inner) -> bool:
        return isinstance(dt, T.ArrayType) and inner(dt.elementType)

    expected = {
        FEATURES_HLF_COLUMN: (
            "array<float>",
            lambda dt: is_array_of(dt, lambda e: isinstance(e, floats)),
        ),
        FEATURES_PARTICLES_COLUMN: (
            "array<array<float>>",
            lambda dt: is_array_of(dt, lambda e: is_array_of(e, lambda x: isinstance(x, floats))),
        ),
        FEATURES_LABEL_COLUMN: (
            "an integer (or the label=K partition directories)",
            lambda dt: isinstance(dt, ints),
        ),
        SOURCE_FILE_COLUMN: ("string", lambda dt: isinstance(dt, T.StringType)),
        ENTRY_COLUMN: ("an integer", lambda dt: isinstance(dt, ints)),
    }
    fields = {f.name: f.dataType for f in schema.fields}
    missing = [name for name in expected if name not in fields]
    if missing:
        raise BadInputError(
            url,
            f"not an ingestion output: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(fields) or 'none'})",
        )
    for name, (want, ok) in expected.items():
        if not ok(fields[name]):
            raise BadInputError(url, f"column {name} is {fields[name].simpleString()}, expected {want}")


def read_input(spark, url: str):
    """The ingestion dataset as a DataFrame (hive partitions label=K), after checking it is there."""
    if is_local(url):
        fs, path = filesystem(url)
        if not fs.isdir(path):
            raise BadInputError(url, "no such directory (expected the jobs.ingest output)")
        if not any(p.endswith(".parquet") for p in fs.find(path)):
            raise BadInputError(url, "holds no .parquet file (empty input; expected the jobs.ingest output)")
        url = os.path.abspath(path)
    from pyspark.sql import functions as F

    df = spark.read.option("pathGlobFilter", "*.parquet").parquet(url)  # only the data files
    _check_schema(df.schema, url)
    return df.withColumn(FILE, F.col("_metadata.file_path")).withColumn(_ROW, F.col("_metadata.row_index"))


def class_counts(df, url: str) -> dict[int, int]:
    """Events per class, checked: every class 0..N_CLASSES-1 present, no other label value."""
    rows = df.groupBy(FEATURES_LABEL_COLUMN).count().collect()
    counts = {r[FEATURES_LABEL_COLUMN]: int(r["count"]) for r in rows}
    if not counts:
        raise BadInputError(url, "holds no events (empty input)")
    bad = sorted(k for k in counts if k is None or not 0 <= k < N_CLASSES)
    if bad:
        raise BadInputError(url, f"label value(s) {bad} outside 0..{N_CLASSES - 1}")
    absent = [k for k in range(N_CLASSES) if k not in counts]
    if absent:
        names = ", ".join(f"{k} ({CLASS_TITLES[k]})" for k in absent)
        raise BadInputError(url, f"class(es) {names} have no events; undersampling needs all {N_CLASSES}")
    return {k: counts[k] for k in range(N_CLASSES)}


def _event_hash(seed: int, purpose: str):
    """A seeded 64-bit hash of the event identity, different for each purpose (so the kept events,
    the split and the shuffle order are independent of each other)."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(int(seed)), F.lit(purpose), F.col(SOURCE_FILE_COLUMN), F.col(ENTRY_COLUMN))


def _undersample(df, counts: dict[int, int], seed: int):
    """Exactly n_min events of every class: the n_min smallest (hash, source_file, entry) of each
    larger class. The ranking runs on a narrow projection; only one threshold row per class comes to
    the driver, and the wide rows are then filtered in place (no shuffle of the particle lists)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    n_min = min(counts.values())
    df = df.withColumn("_keep_key", _event_hash(seed, "undersample"))
    larger = [k for k, n in counts.items() if n > n_min]
    keep = F.col(FEATURES_LABEL_COLUMN).isin([k for k, n in counts.items() if n == n_min])
    if larger:
        order = Window.partitionBy(FEATURES_LABEL_COLUMN).orderBy(
            "_keep_key", SOURCE_FILE_COLUMN, ENTRY_COLUMN
        )
        thresholds = (
            df.where(F.col(FEATURES_LABEL_COLUMN).isin(larger))
            .select(FEATURES_LABEL_COLUMN, "_keep_key", SOURCE_FILE_COLUMN, ENTRY_COLUMN)
            .withColumn("_rank", F.row_number().over(order))
            .where(F.col("_rank") == n_min)
            .collect()
        )
        for t in thresholds:
            key, src, entry = F.col("_keep_key"), F.col(SOURCE_FILE_COLUMN), F.col(ENTRY_COLUMN)
            at_or_below = (key < t["_keep_key"]) | (
                (key == t["_keep_key"])
                & (
                    (src < t[SOURCE_FILE_COLUMN])
                    | ((src == t[SOURCE_FILE_COLUMN]) & (entry <= t[ENTRY_COLUMN]))
                )
            )
            keep = keep | ((F.col(FEATURES_LABEL_COLUMN) == t[FEATURES_LABEL_COLUMN]) & at_or_below)
    return df.where(keep)


def _with_split(df, seed: int, test_fraction: float):
    """`_is_test`: a seeded per-event Bernoulli(test_fraction) draw from a 53-bit slice of a hash."""
    from pyspark.sql import functions as F

    u = _event_hash(seed, "split").bitwiseAND(F.lit((1 << 53) - 1)).cast("double") / float(1 << 53)
    return df.withColumn("_is_test", u < float(test_fraction))


def kept_events(raw, counts: dict[int, int], seed: int, test_fraction: float):
    """The undersampled events with their decisions: `_is_test` (the split), `_shuffle_key` (the
    order of the shuffled training set) and `_fit` (the scalers are fitted on the training split)."""
    from pyspark.sql import functions as F

    kept = _with_split(_undersample(raw, counts, seed), seed, test_fraction)
    return kept.withColumn("_shuffle_key", _event_hash(seed, "shuffle")).withColumn(
        "_fit", ~F.col("_is_test")
    )


def every_event(raw):
    """All input events as fit rows for --scaler-fit all: none in the test split, no shuffle key."""
    from pyspark.sql import functions as F

    every = raw.withColumn("_is_test", F.lit(False)).withColumn("_shuffle_key", F.lit(0).cast("long"))
    return every.withColumn("_fit", F.lit(True))


def split_counts(kept) -> dict[tuple[int, bool], int]:
    """Events per (label, is_test) of `kept_events`."""
    return {(r[FEATURES_LABEL_COLUMN], r["_is_test"]): int(r["count"])
            for r in kept.groupBy(FEATURES_LABEL_COLUMN, "_is_test").count().collect()}  # fmt: skip


def files_with_rows(df):
    """One row per input file (`FILE`): its index in sorted order (`_file_index`) and the sorted row
    indices of the events of `df` in it (`rows`), with label, split, shuffle key and the `_fit` flag
    as `flag`. Narrow data; round-robin repartitioned so that every file is a task of its own."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = F.struct(
        F.col(_ROW).alias("row"),
        F.col(FEATURES_LABEL_COLUMN).cast("int").alias("label"),
        F.col("_fit").alias("flag"),
        F.col("_is_test").alias("is_test"),
        F.col("_shuffle_key").alias("key"),
    )
    files = df.groupBy(FILE).agg(F.sort_array(F.collect_list(rows)).alias("rows"))
    # number the files in one partition on the file names alone, not on the rows lists
    names = df.select(FILE).distinct()
    names = names.withColumn("_file_index", F.row_number().over(Window.orderBy(FILE)) - 1)
    files = files.join(F.broadcast(names), FILE)
    n_files = max(1, len(df.inputFiles()))
    return files.repartition(n_files)
