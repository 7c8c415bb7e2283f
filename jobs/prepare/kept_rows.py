"""The kept events of one input file as the fit round decoded them, kept for the transform round when
both rounds run on one machine (the process executor's scratch folder), so that prepare reads and
decodes its input once there. Each event's particle rows are stored up to its last non-zero row (the
zero padding after it is restored on reading), in Arrow IPC files compressed with LZ4. On Spark the
executors share no disk: the transform round reads the input again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jobs.core.tensors import pad_rows, ragged_to_rows, row_events, rows_to_ragged
from jobs.dltrigger_schema import ENTRY_COLUMN, N_HLF, N_PARTICLE_FEATURES, N_PARTICLES, SOURCE_FILE_COLUMN
from jobs.prepare.scaling import real_rows

SCHEMA = pa.schema(
    [
        pa.field("hlf", pa.list_(pa.float32(), N_HLF)),
        pa.field("rows", pa.list_(pa.list_(pa.float32(), N_PARTICLE_FEATURES))),
        pa.field(SOURCE_FILE_COLUMN, pa.string()),
        pa.field(ENTRY_COLUMN, pa.int64()),
        pa.field("is_test", pa.bool_()),
        pa.field("shuffle", pa.int64()),
    ]
)
_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


@dataclass
class Kept:
    """Kept events of one batch: HLF (n, 14), the particle rows as read, flat (R, 19) with `lengths[i]`
    rows for event i (all 801 from the padded layout, the stored ones from the ragged), their identity
    columns, split and shuffle key."""

    hlf: np.ndarray
    rows: np.ndarray
    lengths: np.ndarray
    source_file: pa.Array
    entry: pa.Array
    is_test: np.ndarray
    shuffle: np.ndarray

    @property
    def particles(self) -> np.ndarray:
        """(n, 801, 19), zero-padded."""
        if (self.lengths == N_PARTICLES).all():
            return self.rows.reshape(len(self.lengths), N_PARTICLES, N_PARTICLE_FEATURES)
        return pad_rows(self.rows, self.lengths, N_PARTICLES)


def cache_path(scratch: str, index: int) -> str:
    return os.path.join(scratch, f"kept-{index:05d}.arrow")


def up_to_last_nonzero(rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each event's rows up to and including its last non-zero one (the zero padding after it is
    dropped; zero rows before it stay), and their counts."""
    nonzero = real_rows(rows)
    if nonzero.all():  # the ragged layout stores real rows only
        return rows, lengths
    event, starts = row_events(lengths)
    last = np.zeros(len(lengths), dtype=np.int64)
    where = np.flatnonzero(nonzero)  # increasing, so an event's last hit is its last in this list
    ends = where[np.r_[event[where][1:] != event[where][:-1], True]] if len(where) else where
    last[event[ends]] = ends - starts[event[ends]] + 1
    keep = np.arange(len(rows)) - starts[event] < last[event]
    return rows[keep], last


class KeptWriter:
    """Writes one file's kept events to its cache file, visible under its name only once complete."""

    def __init__(self, path: str):
        self.path = path
        self._tmp = f"{path}.tmp-{os.getpid()}"
        self._sink = pa.OSFile(self._tmp, "wb")
        self._writer = pa.ipc.new_file(self._sink, SCHEMA, options=_OPTIONS)

    def write(self, kept: Kept) -> None:
        rows, lengths = up_to_last_nonzero(kept.rows, kept.lengths)
        self._writer.write_batch(
            pa.RecordBatch.from_arrays(
                [pa.FixedSizeListArray.from_arrays(pa.array(kept.hlf.reshape(-1), pa.float32()), N_HLF),
                 rows_to_ragged(rows, lengths), kept.source_file, kept.entry,
                 pa.array(kept.is_test), pa.array(kept.shuffle, pa.int64())],
                schema=SCHEMA,
            )
        )  # fmt: skip

    def close(self) -> None:
        self._writer.close()
        self._sink.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._sink.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


def read_kept(path: str) -> Iterator[Kept]:
    """The kept events written by KeptWriter, batch by batch (Kept.particles pads them back to 801 rows)."""
    with pa.memory_map(path) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            rows, lengths = ragged_to_rows(batch.column("rows"), N_PARTICLE_FEATURES, N_PARTICLES)
            hlf = batch.column("hlf").flatten().to_numpy(zero_copy_only=False).reshape(-1, N_HLF)
            yield Kept(
                hlf,
                rows,
                lengths,
                batch.column(SOURCE_FILE_COLUMN),
                batch.column(ENTRY_COLUMN),
                batch.column("is_test").to_numpy(zero_copy_only=False),
                batch.column("shuffle").to_numpy(zero_copy_only=False),
            )
