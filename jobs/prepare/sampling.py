"""The per-event decisions of jobs.prepare, array-at-a-time inside the tasks: which events survive
the undersampling, which go to the test split, where they land in the shuffle.

Every decision is a seeded 64-bit hash of the event's *identity* (class, the name of its source file
within its dataset, entry), never of where the data lives: the same events under another directory,
bucket or store give the same kept set, split and order (a run on a laptop and on a cluster agree).
The name within the dataset is the source file's last path component (`source_file` holds the full
URL the ingestion read). Keys are splitmix64 mixes of a BLAKE2b digest of (seed, purpose, class,
name) and the entry, so they are independent of partitioning, file order and retries.

Undersampling keeps exactly n_min events of each class: the n_min smallest keys (ties broken by
name, entry and the file's path inside the input). The threshold is found without sorting a class in
one task: each task histograms the top 16 bits of its keys, the driver finds the bucket holding the
n_min-th key, and a second narrow pass returns only the keys of that one bucket (about n/65536)."""

from __future__ import annotations

import functools
import hashlib
import operator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.core.errors import BadInputError
from jobs.dltrigger_schema import ENTRY_COLUMN, FEATURES_LABEL_COLUMN, N_CLASSES, SOURCE_FILE_COLUMN
from jobs.prepare.inputs import InputFile

BUCKET_BITS = 16
_SHIFT = np.uint64(64 - BUCKET_BITS)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK53 = np.uint64((1 << 53) - 1)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def dataset_name(source_file: str) -> str:
    """The name of a source file within its dataset: its last path component, so that the same file
    under another directory, bucket or URL scheme is the same file."""
    return source_file.rstrip("/").rsplit("/", 1)[-1]


def _base(seed: int, purpose: str, label: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}\0{purpose}\0{label}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass
class Identity:
    """The identity columns of a file's rows: name index per row into `names`, and entries."""

    label: int
    names: list[str]
    name_index: np.ndarray  # int32 per row
    entries: np.ndarray  # uint64 per row

    @classmethod
    def of(cls, label: int, source_file: pa.ChunkedArray | pa.Array, entry) -> Identity:
        encoded = pc.dictionary_encode(source_file)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks() if encoded.num_chunks != 1 else encoded.chunk(0)
        names = [dataset_name(s) for s in encoded.dictionary.to_pylist()]
        index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        entries = np.asarray(entry.to_numpy(zero_copy_only=False) if hasattr(entry, "to_numpy") else entry)
        return cls(label, names, index, entries.astype(np.int64).view(np.uint64))

    def keys(self, seed: int, purpose: str) -> np.ndarray:
        """uint64 key per row for (seed, purpose)."""
        bases = np.array([_base(seed, purpose, self.label, n) for n in self.names], dtype=np.uint64)
        if not len(bases):
            return np.zeros(0, dtype=np.uint64)
        return _mix(bases[self.name_index] + _mix(self.entries * _GOLDEN + np.uint64(1)))

    def tie_key(self, i: int, key: int, rel: str, row: int) -> tuple:
        return (int(key), self.names[self.name_index[i]], int(self.entries[i].view(np.int64)), rel, row)


def read_identity(f: InputFile) -> Identity:
    """The narrow identity columns of one input file (the particle lists are not read), with the
    file's label column, where it has one, checked against its label=K directory."""
    import pyarrow.parquet as pq

    from jobs.core.storage import filesystem

    columns = [SOURCE_FILE_COLUMN, ENTRY_COLUMN] + ([FEATURES_LABEL_COLUMN] if f.has_label_column else [])
    fs, path = filesystem(f.url)
    with fs.open(path, "rb") as handle:
        table = pq.ParquetFile(handle).read(columns=columns)
    if f.has_label_column:
        labels = table[FEATURES_LABEL_COLUMN].to_numpy(zero_copy_only=False)
        if len(labels) and not np.all(labels == f.label):
            raise BadInputError(f.url, f"label column disagrees with its directory label={f.label}")
    return Identity.of(f.label, table[SOURCE_FILE_COLUMN], table[ENTRY_COLUMN])


@dataclass(frozen=True)
class Plan:
    """Everything a task needs to decide, per row, from the row's identity alone."""

    seed: int
    test_fraction: float
    # label -> the largest kept (key, name, entry, rel, row); absent: the class is kept whole
    thresholds: dict[int, tuple]

    def decide(
        self, f: InputFile, ident: Identity, offset: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kept, is_test, shuffle key as int64) per row of a batch of one file starting at row
        `offset` of the file."""
        n = len(ident.entries)
        kept = np.ones(n, dtype=bool)
        threshold = self.thresholds.get(f.label)
        if threshold is not None:
            keys = ident.keys(self.seed, "undersample")
            t = np.uint64(threshold[0])
            kept = keys < t
            for i in np.flatnonzero(keys == t):  # full ties on the key: rare, settled exactly
                kept[i] = ident.tie_key(i, keys[i], f.rel, offset + int(i)) <= threshold
        u = (ident.keys(self.seed, "split") & _MASK53).astype(np.float64) / float(1 << 53)
        is_test = u < self.test_fraction
        shuffle = ident.keys(self.seed, "shuffle").view(np.int64)
        return kept, is_test, shuffle


# --- the distributed exact threshold -------------------------------------------------------------


@dataclass
class Histogram:
    """Per class, how many undersampling keys fall into each of the 2**BUCKET_BITS buckets."""

    counts: np.ndarray  # (N_CLASSES, 2**BUCKET_BITS) int64
    error: tuple[str, str] | None = None

    def __add__(self, other: Histogram) -> Histogram:
        errors = sorted(e for e in (self.error, other.error) if e)
        return Histogram(self.counts + other.counts, errors[0] if errors else None)


def histogram_task(f: InputFile, seed: int) -> Histogram:
    """The undersampling keys' bucket counts of one file (the file's problem, if it has one)."""
    counts = np.zeros((N_CLASSES, 1 << BUCKET_BITS), dtype=np.int64)
    try:
        ident = read_identity(f)
    except BadInputError as exc:
        return Histogram(counts, (exc.source, exc.problem))
    counts[f.label] = np.bincount(
        (ident.keys(seed, "undersample") >> _SHIFT).astype(np.int64), minlength=1 << BUCKET_BITS
    )
    return Histogram(counts)


def candidates_task(f: InputFile, seed: int, buckets: dict[int, int]) -> list[tuple]:
    """Keys (with their tie-breakers) of the rows in each class's threshold bucket."""
    if f.label not in buckets:
        return []
    ident = read_identity(f)
    keys = ident.keys(seed, "undersample")
    hits = np.flatnonzero((keys >> _SHIFT) == np.uint64(buckets[f.label]))
    return [(f.label, ident.tie_key(i, keys[i], f.rel, int(i))) for i in hits]


def thresholds(executor, files: list[InputFile], counts: dict[int, int], seed: int) -> dict[int, tuple]:
    """For each class larger than the smallest, the n_min-th smallest (key, name, entry, rel, row):
    two map/reduce rounds on the stage's executor (jobs.core.engine)."""
    n_min = min(counts.values())
    larger = {k for k, n in counts.items() if n > n_min}
    todo = [f for f in files if f.label in larger and f.rows]
    if not todo:
        return {}
    hist = executor.map_reduce(
        todo, functools.partial(histogram_task, seed=seed), operator.add, "undersampling histogram"
    )
    if hist.error:
        raise BadInputError(*hist.error)
    buckets, need = {}, {}
    for k in larger:
        cum = np.cumsum(hist.counts[k])
        b = int(np.searchsorted(cum, n_min))
        buckets[k], need[k] = b, n_min - (int(cum[b - 1]) if b else 0)
    found: dict[int, list[tuple]] = {k: [] for k in larger}
    candidates = functools.partial(candidates_task, seed=seed, buckets=buckets)
    for label, tie in executor.map_reduce(todo, candidates, operator.add, "undersampling threshold"):
        found[label].append(tie)
    return {k: sorted(found[k])[need[k] - 1] for k in larger}
