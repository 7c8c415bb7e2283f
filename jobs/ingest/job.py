"""DL-trigger ingestion: Delphes ROOT files of the three classes -> a Parquet dataset of per-event features
(the 801 x 19 particle list and the 14 high-level features), partitioned by label. A Spark job: each task
reads one (file, entry range) chunk with uproot, runs the vectorised reference algorithm
(jobs.ingest.features) batch by batch and writes its own Parquet file with pyarrow.

    python -m jobs.ingest --input qcd=URL --input ttbar=URL --input wjets=URL --output DIR [options]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import operator
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.core import cli
from jobs.core.chunks import Partial, merger, plan_files, run_chunk, warn_skipped
from jobs.core.commit import atomic_output_dir, claim_output
from jobs.core.engine import choose_engine, executor_kwargs, run_map_reduce
from jobs.core.errors import BadInputError, UsageError
from jobs.core.finite import check_finite
from jobs.core.job_metrics import job_metrics
from jobs.core.listing import expand_inputs, select_subset
from jobs.core.locations import resolved
from jobs.core.metering import IOStats, merge_io
from jobs.core.part_files import PartFile
from jobs.core.partitions import Manifest, check_files, log_results, read_manifest, safe_key, source_inputs
from jobs.core.rootio import (
    Chunk,
    branch_names,
    consistent_data,
    iterate_arrays,
    kind,
    open_table,
    require_branches,
)
from jobs.core.storage import (
    METRICS_FILE,
    SUCCESS_MARKER,
    SUMMARY_FILE,
    filesystem,
    is_local,
    local_path,
    write_json,
)
from jobs.core.tensors import rows_to_ragged
from jobs.dltrigger_schema import (
    CLASSES,
    FEATURE_NAMES,
    FEATURES_HLF_COLUMN,
    FEATURES_PARTICLES_COLUMN,
    LABELS,
    LAYOUT_SUMMARY_KEY,
    N_HLF,
    N_PARTICLE_FEATURES,
    N_PARTICLES,
    PARTICLE_LAYOUTS,
    SAMPLES,
    TREE,
    class_name,
    features_arrow_schema,
)
from jobs.ingest.features import (
    CUTS,
    LEAVES,
    LEPTON_CHOICES,
    MUON_BRANCHES,
    MUON_TIGHT,
    Features,
    Options,
    branches,
    compute,
)

log = logging.getLogger("jobs.ingest")

DEFAULT_CHUNK_ENTRIES = 10_000
DEFAULT_BATCH_ENTRIES = 1_000
# A task holds a chunk's input and a batch's features (801 x 19 floats, 61 kB, per event) in memory.
MAX_CHUNK_ENTRIES = 1_000_000
MAX_BATCH_ENTRIES = 100_000
COMPRESSION = "zstd"
# Parquet writer settings: the dense particle list is 15,219 floats per event, so encoding it in
# batches of 1 M values (not 1,024) and 4 MB pages cuts the per-batch overhead (≈ 1.15× faster, same bytes)
PARQUET_OPTIONS = {
    "compression": COMPRESSION,
    "use_dictionary": ["source_file"],
    "write_statistics": ["source_file", "entry"],
    "write_batch_size": 1 << 20,
    "data_page_size": 4 << 20,
}
SCHEMA = features_arrow_schema()  # the padded layout, the reference's
SCHEMAS = {layout: features_arrow_schema(layout) for layout in PARTICLE_LAYOUTS}
LAYOUT_CHOICES = ("auto", *PARTICLE_LAYOUTS)


def _buffer_array(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A primitive Arrow array over a contiguous numpy array without a copy. Unlike pa.array, it does
    not import pandas (seconds per Spark worker)."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(type_, values.size, [None, pa.py_buffer(values)])


def _repeated_string(value: str, n: int) -> pa.Array:
    """`value` n times as an Arrow string array, built from its buffers (no Python list)."""
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)])


def _particles(features: Features, layout: str) -> pa.Array:
    """The particle list column in `layout`: all 801 rows (zero-copy), or each event's real rows only
    (the lepton, tracks, photons and neutral hadrons come first in every event)."""
    flat = features.particles.reshape(-1, N_PARTICLE_FEATURES)
    if layout == "ragged":
        real = np.arange(N_PARTICLES)[None, :] < features.n_particles[:, None]
        return rows_to_ragged(flat[real.reshape(-1)], features.n_particles)
    values = _buffer_array(flat.reshape(-1), pa.float32())
    rows = pa.FixedSizeListArray.from_arrays(values, N_PARTICLE_FEATURES)
    return pa.FixedSizeListArray.from_arrays(rows, N_PARTICLES)


def to_table(features: Features, source_file: str, first_entry: int, layout: str = "padded") -> pa.Table:
    """The Arrow table of a batch in `layout` (zero-copy from the feature arrays where it can be)."""
    m = features.entries.size
    hlf = pa.FixedSizeListArray.from_arrays(_buffer_array(features.hlf.reshape(-1), pa.float32()), N_HLF)
    entries = _buffer_array(features.entries.astype(np.int64) + first_entry, pa.int64())
    columns = [hlf, _particles(features, layout), _repeated_string(source_file, m), entries]
    return pa.Table.from_arrays(columns, schema=SCHEMAS[layout])


def part_name(label: int, sample: str, file_index: int, start: int | None = None) -> str:
    """Deterministic name of a chunk's Parquet file (a retried task overwrites its own file)."""
    stem = f"label={label}/part-{sample}-{file_index:05d}-"
    return stem + ("*" if start is None else f"{start:012d}.parquet")


@dataclass
class ChunkOut:
    """What a chunk contributes: its class's cut-flow counts and the rows it wrote."""

    cutflow: dict[str, np.ndarray]
    written: int
    cpu_seconds: float = 0.0  # process CPU time of the tasks: throughput per core on a shared machine

    def __add__(self, other: ChunkOut) -> ChunkOut:
        flow = dict(self.cutflow)
        for k, v in other.cutflow.items():
            flow[k] = flow[k] + v if k in flow else v
        return ChunkOut(flow, self.written + other.written, self.cpu_seconds + other.cpu_seconds)


@dataclass(frozen=True)
class ChunkTask:
    """A picklable task: which class the chunk belongs to, where to write, and the algorithm options."""

    name: str
    file_index: int
    staging: str
    options: Options
    batch_entries: int
    layout: str = "padded"

    def __call__(self, chunk: Chunk, stats: IOStats) -> ChunkOut:
        label = LABELS[self.name]
        part = part_name(label, SAMPLES[self.name], self.file_index, chunk.start)
        flow = np.zeros(len(CUTS), dtype=np.int64)
        cpu0 = time.process_time()
        table = open_table(chunk.url, chunk.tree, stats)
        # written straight to its final place, visible only when complete (no rename: a copy on a store)
        sink = PartFile(f"{self.staging.rstrip('/')}/{part}")
        try:
            with pq.ParquetWriter(sink.file, SCHEMAS[self.layout], **PARQUET_OPTIONS) as writer:
                batches = iterate_arrays(
                    chunk.url,
                    table,
                    branches(self.options.muon_branch),
                    chunk.start,
                    chunk.stop,
                    self.batch_entries,
                )
                for start, arrays in batches:
                    with consistent_data(chunk.url, start, start + len(arrays)):
                        features = compute(arrays, self.options, chunk.url)
                    check_finite(
                        chunk.url,
                        {FEATURES_HLF_COLUMN: features.hlf, FEATURES_PARTICLES_COLUMN: features.particles},
                        FEATURE_NAMES,
                    )  # garbled baskets decode to NaN and 3e38: the file is bad, not its features
                    flow += features.cutflow
                    writer.write_table(to_table(features, chunk.url, start, self.layout))
        except BaseException:
            sink.abort()  # no partial file is left behind for readers (or for --on-bad-file skip)
            raise
        finally:
            table.file.close()
        sink.commit()
        return ChunkOut({self.name: flow}, int(flow[-1]), time.process_time() - cpu0)


def _process(item: tuple[Chunk, ChunkTask]) -> Partial[ChunkOut]:
    return run_chunk(*item)


def parse_inputs(items: Sequence[str]) -> dict[str, list[str]]:
    """`class=URL` items (URL may be a glob or directory; one per item, repeat for several) -> patterns
    per class; every class needs at least one."""
    patterns: dict[str, list[str]] = defaultdict(list)
    for item in items:
        name, sep, urls = item.partition("=")
        if not sep or not urls.strip():
            raise UsageError(f"--input: expected CLASS=URL, got {item!r}")
        short = class_name(name.strip())
        if short is None:
            known = ", ".join(f"{s} ({SAMPLES[s]})" for s in CLASSES)
            raise UsageError(f"--input: unknown class {name.strip()!r}; known classes: {known}")
        patterns[short].append(urls)  # one path, spaces and all: repeat --input for several
    missing = [f"{c} ({SAMPLES[c]})" for c in CLASSES if c not in patterns]
    if missing:
        raise UsageError(f"--input: no input for class(es) {', '.join(missing)}; give CLASS=URL for each")
    return {c: patterns[c] for c in CLASSES}


def check_disjoint(files: dict[str, list[str]]) -> None:
    """Refuse a file listed under two classes (one folder given for all three once labelled the same
    events 0, 1 and 2): compared where it really is (jobs.core.locations: symlinks, `~`, `..`)."""
    owner: dict[str, str] = {}
    for name, urls in files.items():
        for url in urls:
            first = owner.setdefault(str(resolved(url)), name)
            if first != name:
                raise BadInputError(
                    f"--input {first}= and --input {name}=", f"both hold {url}: a file belongs to one class"
                )


@dataclass
class Plan:
    items: list[tuple[Chunk, ChunkTask]]
    bad: dict[str, str]
    io: dict[str, IOStats]
    muon_branch: str | None


class FileCheck:
    """Checks a file's Delphes tree: every leaf the algorithm reads, and entries. The tight-muon
    collection is --muon-branch, or else the first of MUON_BRANCHES that the first good file holds;
    one choice for the whole job, so that no dataset mixes two muon definitions."""

    expected = "the Delphes collections " + ", ".join(
        f"{' or '.join(MUON_BRANCHES)} (--muon-branch)" if c == MUON_TIGHT else c for c in LEAVES
    )

    def __init__(self, muon_branch: str | None):
        self.muon_branch = muon_branch

    def __call__(self, url: str, table) -> None:
        have = branch_names(table)
        muon = self.muon_branch or next(
            (m for m in MUON_BRANCHES if all(f"{m}.{f}" in have for f in LEAVES[MUON_TIGHT])), MUON_TIGHT
        )
        require_branches(url, table, branches(muon), self.expected)
        if table.num_entries == 0:
            raise BadInputError(url, f"{kind(table)} {TREE!r} has no entries")
        self.muon_branch = muon


def plan(
    files: dict[str, list[str]], staging: str, options: Options, chunk_entries: int, batch_entries: int,
    on_bad_file: str, muon_branch: str | None = None, layout: str = "padded",
    folders: dict[str, str] | None = None,
) -> Plan:  # fmt: skip
    """Check the tree and the leaves of every file of every class and split it into entry ranges (one
    Spark task each); bad files raise or, with on_bad_file=skip, are recorded and left out.
    `muon_branch` None: chosen from the first good file (see FileCheck). `folders`: the subfolder of
    the output each file's rows go to (its partition's), else the output itself."""
    items: list[tuple[Chunk, ChunkTask]] = []
    bad: dict[str, str] = {}
    io: dict[str, IOStats] = {}
    check = FileCheck(muon_branch)
    for name, urls in files.items():
        p = plan_files(urls, lambda url, stats: TREE, check, chunk_entries, on_bad_file)
        task_options = dataclasses.replace(options, muon_branch=check.muon_branch or MUON_TIGHT)
        for index, url in enumerate(urls):
            task = ChunkTask(
                name, index, subfolder(staging, folders, url), task_options, batch_entries, layout
            )
            items += [(c, task) for c in p.chunks.get(url, [])]
        bad.update(p.bad)
        io = merge_io(io, p.io)
    return Plan(items, bad, io, check.muon_branch)


def subfolder(staging: str, folders: dict[str, str] | None, url: str) -> str:
    """Where a file's rows are written: its partition's folder of the output, else the output."""
    folder = (folders or {}).get(url)
    return f"{staging.rstrip('/')}/{folder}" if folder else staging


def class_summary(name: str, files: list[str], bad: dict[str, str], flow: np.ndarray | None) -> dict:
    flow = np.zeros(len(CUTS), np.int64) if flow is None else flow
    return {
        "label": LABELS[name],
        "sample": SAMPLES[name],
        "files": len([u for u in files if u not in bad]),
        "skipped_files": len([u for u in files if u in bad]),
        "events_read": int(flow[0]),
        "events_passing": {cut: int(n) for cut, n in zip(CUTS, flow.tolist(), strict=True)},
        "events_written": int(flow[-1]),
    }


def resolve_layout(layout: str) -> str:
    """The stored particle layout: auto = ragged (the real rows only; jobs.prepare reads both)."""
    if layout not in LAYOUT_CHOICES:
        raise UsageError(f"--layout: choose {', '.join(LAYOUT_CHOICES)}, got {layout!r}")
    return "ragged" if layout == "auto" else layout


def partition_figures(m: Manifest, good: dict[str, ChunkOut], bad: dict[str, str]) -> dict:
    """A partition's key and counts, as its folder and the run's metrics record them."""
    mine = [f["url"] for f in m.files]
    written = sum(good[u].written for u in mine if u in good)
    return {"key": m.key, "manifest": m.url, "events_written": int(written),
            "files": len([u for u in mine if u not in bad])}  # fmt: skip


def write_partition(folder: str, figures: dict) -> None:
    """Mark a partition's folder complete: its counts, then `_SUCCESS` (prepare requires it)."""
    if is_local(folder):
        os.makedirs(local_path(folder), exist_ok=True)
    write_json(f"{folder}/partition.json", figures)
    fs, path = filesystem(f"{folder}/{SUCCESS_MARKER}")
    fs.pipe_file(path, b"")


def manifest_inputs(parts: list[Manifest]) -> dict[str, list[str]]:
    """The files the partitions recorded, by class (a manifest's input names are the classes)."""
    files: dict[str, list[str]] = {}
    for m in parts:
        for f in m.files:
            if f["input"] not in SAMPLES:
                raise BadInputError(m.url, f"input {f['input']!r} is not a class ({', '.join(SAMPLES)})")
            files.setdefault(f["input"], []).append(f["url"])
    return files


def run(
    inputs: Sequence[str],
    output: str,
    *,
    options: Options = Options(),  # noqa: B008
    muon_branch: str | None = None,
    on_bad_file: str = "fail",
    chunk_entries: int = DEFAULT_CHUNK_ENTRIES,
    batch_entries: int = DEFAULT_BATCH_ENTRIES,
    subset: str | None = None,
    partitions: int | None = None,
    spark=None,
    master: str | None = None,
    event_log_dir: str | None = None,
    spark_conf: dict[str, str] | None = None,
    engine: str = "auto",
    layout: str = "auto",
    manifests: Sequence[str] = (),
) -> dict:
    """Ingest the inputs (CLASS=URL items) into `output` atomically; returns the metrics. The tight
    muons come from collection `muon_branch` (None: MuonTight if the files hold it, else Muon). The
    tasks run where `engine` says (jobs.core.engine): worker processes or Spark, same output."""
    cli.check_range(chunk_entries, "--chunk-entries", 1, MAX_CHUNK_ENTRIES)
    cli.check_range(batch_entries, "--batch-entries", 1, MAX_BATCH_ENTRIES)
    cli.check_range(partitions, "--partitions", 1, cli.MAX_PARTITIONS)
    layout = resolve_layout(layout)
    if spark is None:
        choose_engine(engine, master, event_log_dir)  # a wrong combination fails before any work
    parts = [read_manifest(url, output) for url in manifests]
    if parts and (inputs or subset):
        raise UsageError("--manifest: give the partitions' manifests or --input/--subset, not both")
    patterns = manifest_inputs(parts) if parts else parse_inputs(inputs)
    claim_output(
        output, source_inputs(parts) if parts else [url for urls in patterns.values() for url in urls]
    )
    t0 = time.perf_counter()
    changed = check_files(parts)
    listed = (
        patterns if parts else {name: expand_inputs(urls, suffix=".root") for name, urls in patterns.items()}
    )
    check_disjoint(listed)
    files = {name: select_subset(urls, subset) for name, urls in listed.items()}
    folders = {f["url"]: safe_key(m.key) for m in parts for f in m.files}
    with atomic_output_dir(output, shared=True) as staging:  # executors write parts straight into it
        p = plan(
            files, staging, options, chunk_entries, batch_entries, on_bad_file, muon_branch, layout, folders
        )
        total, info = (
            run_map_reduce(
                engine,
                "colliderflow-ingest",
                p.items,
                _process,
                merger(operator.add),
                spark=spark,
                master=master,
                event_log_dir=event_log_dir,
                spark_conf=spark_conf,
                partitions=partitions,
            )
            if p.items
            else (Partial[ChunkOut](), {"engine": "none"})
        )
        if total.bad and on_bad_file == "fail":
            url = sorted(total.bad)[0]
            raise BadInputError(url, total.bad[url])
        warn_skipped(total.bad)  # the plan warned of its own
        bad = {**p.bad, **total.bad}
        for name, urls in files.items():
            if all(u in bad for u in urls):
                raise BadInputError(
                    f"--input {name}=", f"no readable input file for class {name} (all were skipped)"
                )
            for index, url in enumerate(urls):  # a file that failed in one chunk is dropped whole
                if url in total.bad:
                    fs, path = filesystem(
                        os.path.join(
                            subfolder(staging, folders, url), part_name(LABELS[name], SAMPLES[name], index)
                        )
                    )
                    for part in fs.glob(path):
                        fs.rm(part)
        good = {u: v for u, v in total.values.items() if u not in bad}
        merged = sum(good.values(), ChunkOut({}, 0))
        summary = {
            "classes": {
                name: class_summary(name, urls, bad, merged.cutflow.get(name)) for name, urls in files.items()
            },
            "cuts": list(CUTS),
            "options": {
                "physical_phi_wrap": options.physical_phi_wrap,
                "mt_sqrt": options.mt_sqrt,
                "lepton_choice": options.lepton_choice,
                "muon_branch": p.muon_branch,
            },
            LAYOUT_SUMMARY_KEY: layout,
            "skipped_files": [{"url": u, "problem": pr} for u, pr in sorted(bad.items())],
        }
        events = sum(c["events_read"] for c in summary["classes"].values())
        wall = time.perf_counter() - t0
        metrics = job_metrics(
            stage="ingest",
            events=events,
            wall_seconds=wall,
            io=merge_io(p.io, total.io),
            skipped=bad,
            spark={**info, "tasks": len(p.items)},
            task_seconds=total.task_seconds,
            task_cpu_seconds=merged.cpu_seconds,
            events_written=merged.written,
            events_per_class={n: c["events_read"] for n, c in summary["classes"].items()},
            written_per_class={n: c["events_written"] for n, c in summary["classes"].items()},
            files_read=sum(c["files"] for c in summary["classes"].values()),
            **({"partitions": [partition_figures(m, good, bad) for m in parts]} if parts else {}),
            **({"changed_files": changed} if changed else {}),
        )
        write_json(os.path.join(staging, SUMMARY_FILE), summary)
        write_json(os.path.join(staging, METRICS_FILE), metrics)
        for m, figures in zip(parts, metrics.get("partitions", []), strict=True):  # complete folders each
            write_partition(subfolder(staging, folders, m.files[0]["url"]), figures)
    if parts:  # each partition's folder is its result (prepare reads the partitions so far)
        log_results(parts, {m.key: f"{output.rstrip('/')}/{safe_key(m.key)}" for m in parts}, output)
    log.info(
        "ingest: %d events read, %d written, %.2f s (%.0f events/s) -> %s",
        events,
        merged.written,
        wall,
        events / wall if wall else 0.0,
        output,
    )
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(
        "ingest",
        __doc__.splitlines()[0],
        "python -m jobs.ingest --input qcd=data/delphes/qcd_lepFilter_13TeV --input "
        "ttbar=data/delphes/ttbar_lepFilter_13TeV --input wjets=data/delphes/Wlnu_lepFilter_13TeV "
        "--output out/features",
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        help="a partition's manifest (URL): ingest exactly the files it recorded, by class; repeatable",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="CLASS=URL",
        help=f"class ({', '.join(CLASSES)} or the sample name) = ROOT file, glob or directory (fsspec "
        "URL; repeatable; each value is one path, spaces and all)",
    )
    parser.add_argument("--output", required=True, help="output directory (replaced atomically)")
    parser.add_argument(
        "--chunk-entries", type=int, default=DEFAULT_CHUNK_ENTRIES, help="entries per Spark task"
    )
    parser.add_argument(
        "--batch-entries",
        type=int,
        default=DEFAULT_BATCH_ENTRIES,
        help="entries per batch (Parquet row group)",
    )
    parser.add_argument(
        "--partitions", type=int, default=None, help="Spark partitions (default: one per chunk)"
    )
    parser.add_argument(
        "--subset", default=None, help="k/N: the k-th of N disjoint file subsets of each class"
    )
    quirks = parser.add_argument_group(
        "reference quirks (default: as the reference; see docs/dl-trigger-ingestion.md)"
    )
    quirks.add_argument(
        "--physical-phi-wrap", action="store_true", help="wrap the isolation cone's dphi at +-pi, not +-2pi"
    )
    quirks.add_argument(
        "--mt-sqrt", action="store_true", help="MT = sqrt(2 MET pT (1 - cos dphi)), not its square"
    )
    quirks.add_argument(
        "--lepton-choice",
        choices=LEPTON_CHOICES,
        default="eta",
        help="electron vs muon candidate: the larger eta (reference) or the larger pT",
    )
    parser.add_argument(
        "--muon-branch",
        default=None,
        metavar="COLLECTION",
        help="the Delphes collection of tight muons (default: MuonTight, the reference card's name, if "
        "the files hold it, else Muon, the standard cards' name)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUT_CHOICES,
        default="auto",
        help="how the particle list is stored: ragged (each event's real rows only), padded (the "
        "reference's 801 x 19) or auto (default: ragged); jobs.prepare reads both",
    )
    cli.add_bad_file_arg(parser)
    cli.add_executor_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.input and not args.manifest:
        parser.error("one of --input or --manifest is required")
    run(
        args.input,
        args.output,
        options=Options(args.physical_phi_wrap, args.mt_sqrt, args.lepton_choice),
        muon_branch=args.muon_branch,
        on_bad_file=args.on_bad_file,
        chunk_entries=args.chunk_entries,
        batch_entries=args.batch_entries,
        subset=args.subset,
        partitions=args.partitions,
        layout=args.layout,
        **executor_kwargs(args),
        manifests=args.manifest,
    )
    return 0
