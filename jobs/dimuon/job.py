"""CMS di-muon reduction: ROOT files -> opposite-charge muon pairs -> mass spectrum, muon kinematics
and cut-flow. A Spark job: each task reads one (file, entry range) chunk with uproot and computes
array-at-a-time; per-chunk histograms merge by addition, so the result is independent of chunking.

    python -m jobs.dimuon --input URL [URL ...] --output DIR [--schema auto|nanoaod|aod|pairs|p4]
    python -m jobs.dimuon --manifest URL [--manifest URL ...] --output DIR

With partition manifests (jobs.core.partitions) the stage reads exactly the files they recorded and
also writes each partition's own histograms under `partitions/<key>/`, which it logs as the
partition's result once the output is committed (what jobs.dimuon.cumulative adds up).

Inputs are TTrees or RNTuples (the format of the same name is read by name in either).
"""

from __future__ import annotations

import argparse
import functools
import logging
import operator
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import hist
import numpy as np
import uproot

from jobs.core import cli
from jobs.core.chunks import Partial, fold_good, merger, plan_files, run_chunk, warn_skipped
from jobs.core.commit import atomic_output_dir, claim_output
from jobs.core.engine import choose_engine, executor_kwargs, run_map_reduce
from jobs.core.errors import BadInputError, UsageError
from jobs.core.job_metrics import job_metrics
from jobs.core.listing import expand_inputs, select_subset
from jobs.core.metering import IOStats, merge_io
from jobs.core.partitions import Manifest, check_files, log_results, read_manifest, safe_key, source_inputs
from jobs.core.rootio import (
    Chunk,
    branch_names,
    consistent_data,
    listing,
    near_matches,
    open_root,
    open_table,
    read_arrays,
    require_branches,
    table_names,
)
from jobs.core.storage import METRICS_FILE, write_json
from jobs.dimuon.peaks import peaks
from jobs.dimuon.selection import CUTS, SCHEMA_BRANCHES, SELECTIONS, detect_schema

log = logging.getLogger("jobs.dimuon")

MASS_RANGE = (0.25, 300.0)
DEFAULT_MASS_BINS = 2000
MAX_MASS_BINS = 100_000  # 50x the default; a billion bins would need 8 GB per histogram
DEFAULT_CHUNK_ENTRIES = 2_000_000
MAX_CHUNK_ENTRIES = 100_000_000  # a task holds one chunk in memory: a few GB at this bound
DEFAULT_TREES = ("Events", "events")
# a partition's histograms once more as plain counts (flow bins included): what the cumulative sum
# reads, a hundred partitions in milliseconds (histograms.root is what a physicist opens)
COUNTS_FILE = "histograms.npz"


def new_histograms(mass_bins: int = DEFAULT_MASS_BINS) -> dict[str, hist.Hist]:
    """Empty histograms: log-spaced mass bins over the full di-muon range, the reference's muon binning."""
    return {
        "dimuon_mass": hist.Hist(
            hist.axis.Regular(
                mass_bins,
                *MASS_RANGE,
                transform=hist.axis.transform.log,
                name="mass",
                label=r"$m_{\mu\mu}$ [GeV]",
            ),
            storage=hist.storage.Double(),
        ),
        "muon_pt": hist.Hist(hist.axis.Regular(200, 0, 200, name="pt", label=r"$p_T$ [GeV]")),
        "muon_eta": hist.Hist(hist.axis.Regular(48, -2.4, 2.4, name="eta", label=r"$\eta$")),
        "muon_phi": hist.Hist(hist.axis.Regular(63, -3.15, 3.15, name="phi", label=r"$\phi$")),
    }


@dataclass
class DimuonResult:
    """What one chunk (or a merge of chunks) contributes: histograms and counts after each cut."""

    hists: dict[str, hist.Hist]
    counts: np.ndarray
    pairs: int = 0
    extra: dict = field(default_factory=dict)

    def __add__(self, other: DimuonResult) -> DimuonResult:
        return DimuonResult(
            {k: self.hists[k] + other.hists[k] for k in self.hists},
            self.counts + other.counts,
            self.pairs + other.pairs,
        )


@dataclass(frozen=True)
class ChunkTask:
    """A picklable task: the chunk plus the schema and binning (shipped to the executor)."""

    schema: str
    mass_bins: int

    def __call__(self, chunk: Chunk, stats: IOStats) -> DimuonResult:
        table = open_table(chunk.url, chunk.tree, stats)
        try:
            arrays = read_arrays(chunk.url, table, SCHEMA_BRANCHES[self.schema], chunk.start, chunk.stop)
        finally:
            table.file.close()
        with consistent_data(chunk.url, chunk.start, chunk.stop):
            sel = SELECTIONS[self.schema](arrays)
        h = new_histograms(self.mass_bins)
        h["dimuon_mass"].fill(sel.mass)
        h["muon_pt"].fill(sel.pt)
        h["muon_eta"].fill(sel.eta)
        h["muon_phi"].fill(sel.phi)
        return DimuonResult(h, np.asarray(sel.counts, dtype=np.int64), len(sel.mass))


def _process(chunk: Chunk, task: ChunkTask) -> Partial[DimuonResult]:
    return run_chunk(chunk, task)


def spectrum_peaks(mass: hist.Hist) -> dict[str, dict[str, float]]:
    """The Z peak's position and width and the J/ψ yield of the mass spectrum (jobs.dimuon.peaks)."""
    return peaks(mass.axes[0].edges, mass.values())


def resolve_tree(url: str, requested: str | None, stats: IOStats) -> str:
    """The event table to read (a TTree or an RNTuple): --tree if given, else Events/events, else the
    file's only one."""
    if requested:
        return requested
    with open_root(url, stats) as root:
        trees = table_names(root)
        held = listing(f"{k.split(';')[0]} ({c})" for k, c in root.classnames(recursive=False).items())
    for name in DEFAULT_TREES:
        if name in trees:
            return name
    if len(trees) == 1:
        return trees[0]
    if not trees:
        raise BadInputError(url, f"holds no TTree or RNTuple (it holds: {held or 'nothing'})")
    raise BadInputError(url, f"cannot choose a tree among {listing(trees)}; pass --tree")


@dataclass
class Plan:
    schema: str
    chunks: list[Chunk]
    bad: dict[str, str]
    io: dict[str, IOStats]


def plan(urls: Sequence[str], schema: str, tree: str | None, chunk_entries: int, on_bad_file: str) -> Plan:
    """Check tree and branches of every file, fix the schema (the first file that tells it, unless
    given), split into entry ranges; bad files raise or, with on_bad_file=skip, are left out."""
    chosen = None if schema == "auto" else schema

    def check(url: str, t) -> None:
        nonlocal chosen
        if chosen is None:
            branches = branch_names(t)
            chosen = detect_schema(branches)
            if chosen is None:
                muon_like = near_matches([b for need in SCHEMA_BRANCHES.values() for b in need], branches)
                raise BadInputError(
                    url,
                    f"cannot tell the schema of {t.name!r} (pass --schema {'|'.join(SCHEMA_BRANCHES)}); "
                    f"{len(branches)} branches, near matches to the schemas' branches: "
                    f"{listing(muon_like) or 'none'}",
                )
        require_branches(url, t, SCHEMA_BRANCHES[chosen], expected=f"the {chosen} schema's branches")

    files = plan_files(
        urls, lambda url, stats: resolve_tree(url, tree, stats), check, chunk_entries, on_bad_file
    )
    if chosen is None:
        raise BadInputError(listing(urls), "no readable input file")
    return Plan(chosen, [c for url in urls for c in files.chunks.get(url, [])], files.bad, files.io)


def write_cutflow(path: str, schema: str, counts: np.ndarray, skipped: dict[str, str]) -> None:
    names = CUTS[schema]
    cuts = []
    for i, (name, n) in enumerate(zip(names, counts.tolist(), strict=True)):
        prev = counts[i - 1] if i else n
        cuts.append(
            {
                "cut": name,
                "events": int(n),
                "fraction_of_previous": float(n / prev) if prev else None,
                "fraction_of_total": float(n / counts[0]) if counts[0] else None,
            }
        )
    write_json(
        path,
        {
            "schema": schema,
            "cuts": cuts,
            "skipped_files": [{"url": u, "problem": p} for u, p in sorted(skipped.items())],
        },
    )


def write_histograms(path: str, hists: dict[str, hist.Hist]) -> None:
    with uproot.recreate(path) as f:
        for name, h in hists.items():
            f[name] = h


def run(
    inputs: Sequence[str],
    output: str,
    *,
    schema: str = "auto",
    tree: str | None = None,
    on_bad_file: str = "fail",
    chunk_entries: int = DEFAULT_CHUNK_ENTRIES,
    mass_bins: int = DEFAULT_MASS_BINS,
    subset: str | None = None,
    partitions: int | None = None,
    spark=None,
    engine: str = "auto",
    master: str | None = None,
    event_log_dir: str | None = None,
    spark_conf: dict[str, str] | None = None,
    plot: bool = True,
    manifests: Sequence[str] = (),
) -> dict:
    """Run the reduction and write the output contract into `output` atomically; returns metrics.
    With `manifests` the inputs are the files the partitions recorded (and `inputs` must be empty)."""
    if schema != "auto" and schema not in SCHEMA_BRANCHES:
        raise UsageError(f"--schema: unknown schema {schema!r} (choose auto, {', '.join(SCHEMA_BRANCHES)})")
    cli.check_range(mass_bins, "--mass-bins", 1, MAX_MASS_BINS)
    cli.check_range(chunk_entries, "--chunk-entries", 1, MAX_CHUNK_ENTRIES)
    cli.check_range(partitions, "--partitions", 1, cli.MAX_PARTITIONS)
    if spark is None:
        choose_engine(engine, master, event_log_dir)  # a wrong combination fails before any work
    parts = [read_manifest(url, output) for url in manifests]
    changed: list[str] = []
    if parts and (inputs or subset):
        raise UsageError("--manifest: give the partitions' manifests or --input/--subset, not both")
    claim_output(output, inputs or source_inputs(parts))
    t0 = time.perf_counter()
    if parts:
        changed = check_files(parts)
        urls = list(dict.fromkeys(f["url"] for m in parts for f in m.files))
    else:
        urls = select_subset(expand_inputs(list(inputs), ".root", missing_ok=on_bad_file == "skip"), subset)
    p = plan(urls, schema, tree, chunk_entries, on_bad_file)
    if p.chunks:
        total, info = run_map_reduce(
            engine,
            "colliderflow-dimuon",
            p.chunks,
            functools.partial(_process, task=ChunkTask(p.schema, mass_bins)),
            merger(operator.add),
            spark=spark,
            master=master,
            event_log_dir=event_log_dir,
            spark_conf=spark_conf,
            partitions=partitions,
        )
    else:
        total, info = Partial[DimuonResult](), {}
    if total.bad and on_bad_file == "fail":
        url = sorted(total.bad)[0]
        raise BadInputError(url, total.bad[url])
    warn_skipped(total.bad)  # the plan warned of its own
    bad = {**p.bad, **total.bad}
    good_files = [u for u in urls if u not in bad]
    if not good_files:
        raise BadInputError(listing(urls), "no readable input file (all were skipped)")
    empty = DimuonResult(new_histograms(mass_bins), np.zeros(len(CUTS[p.schema]), np.int64))
    result = fold_good(total, operator.add) or empty
    shares = {m.key: fold_good(_only(total, m), operator.add) or empty for m in parts}
    wall = time.perf_counter() - t0
    io = merge_io(p.io, total.io)
    metrics = job_metrics(
        stage="dimuon",
        events=int(result.counts[0]),
        wall_seconds=wall,
        io=io,
        skipped=bad,
        spark={**info, "tasks": len(p.chunks)},
        task_seconds=total.task_seconds,
        schema=p.schema,
        pairs=int(result.pairs),
        files_read=len(good_files),
        peaks=spectrum_peaks(result.hists["dimuon_mass"]),
        **({"partitions": [partition_figures(m, shares[m.key], bad) for m in parts]} if parts else {}),
        **({"changed_files": changed} if changed else {}),
    )
    with atomic_output_dir(output) as out:
        write_histograms(os.path.join(out, "histograms.root"), result.hists)
        write_cutflow(os.path.join(out, "cutflow.json"), p.schema, result.counts, bad)
        write_json(os.path.join(out, METRICS_FILE), metrics)
        if plot:
            from jobs.dimuon.plot import plot_spectrum

            plot_spectrum(
                result.hists["dimuon_mass"],
                os.path.join(out, "dimuon_mass.png"),
                events=int(result.counts[0]),
                pairs=int(result.pairs),
            )
        for m in parts:
            write_result(os.path.join(out, "partitions", safe_key(m.key)), shares[m.key], p.schema, bad, m)
    if parts:
        log_results(
            parts, {m.key: f"{output.rstrip('/')}/partitions/{safe_key(m.key)}" for m in parts}, output
        )
    log.info(
        "dimuon: %d events, %d pairs, %.2f s (%.0f events/s) -> %s",
        result.counts[0],
        result.pairs,
        wall,
        result.counts[0] / wall,
        output,
    )
    return metrics


def _only(total: Partial[DimuonResult], m: Manifest) -> Partial[DimuonResult]:
    """The per-file values of one partition's files."""
    mine = {f["url"] for f in m.files}
    return Partial({u: v for u, v in total.values.items() if u in mine}, bad=total.bad)


def partition_figures(m: Manifest, result: DimuonResult, bad: dict[str, str]) -> dict:
    """A partition's key and counts, as its result folder and the run's metrics record them."""
    mine = {f["url"] for f in m.files}
    return {"key": m.key, "manifest": m.url, "events": int(result.counts[0]), "pairs": int(result.pairs),
            "files": len(mine - set(bad))}  # fmt: skip


def write_result(directory: str, result: DimuonResult, schema: str, bad: dict[str, str], m: Manifest) -> None:
    """One partition's share of the output: its histograms, cut-flow and counts."""
    os.makedirs(directory, exist_ok=True)
    mine = {f["url"] for f in m.files}
    write_histograms(os.path.join(directory, "histograms.root"), result.hists)
    np.savez(os.path.join(directory, COUNTS_FILE), **{k: h.view(flow=True) for k, h in result.hists.items()})
    write_cutflow(
        os.path.join(directory, "cutflow.json"), schema, result.counts, {u: bad[u] for u in bad if u in mine}
    )
    write_json(os.path.join(directory, "partition.json"), partition_figures(m, result, bad))


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(
        "dimuon",
        __doc__.splitlines()[0],
        "python -m jobs.dimuon --input 'data/nanoaod/*.root' --output out/dimuon --master local[4]",
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        help="a partition's manifest (URL): read exactly the files it recorded; repeat for several",
    )
    parser.add_argument(
        "--input",
        nargs="+",
        action="extend",
        default=[],
        help="ROOT files, globs or directories (fsspec URLs); several values or a repeated --input, each "
        "one path (a path with spaces is one value)",
    )
    parser.add_argument("--output", required=True, help="output directory (replaced atomically)")
    parser.add_argument(
        "--schema",
        default="auto",
        choices=["auto", *SCHEMA_BRANCHES],
        help="input layout; auto: the one whose branches the first readable file holds",
    )
    parser.add_argument(
        "--tree", default=None, help="TTree or RNTuple name (default: Events/events or the file's only one)"
    )
    parser.add_argument("--chunk-entries", type=int, default=DEFAULT_CHUNK_ENTRIES, help="entries per task")
    parser.add_argument(
        "--partitions", type=int, default=None, help="Spark partitions (default: one per chunk)"
    )
    parser.add_argument("--mass-bins", type=int, default=DEFAULT_MASS_BINS, help="log-spaced mass bins")
    parser.add_argument("--subset", default=None, help="k/N: process the k-th of N disjoint file subsets")
    parser.add_argument("--no-plot", action="store_true", help="skip dimuon_mass.png")
    cli.add_bad_file_arg(parser)
    cli.add_executor_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    inputs = list(args.input)  # each value is one path, spaces and all
    if not inputs and not args.manifest:
        parser.error("one of --input or --manifest is required")
    run(
        inputs,
        args.output,
        schema=args.schema,
        tree=args.tree,
        on_bad_file=args.on_bad_file,
        chunk_entries=args.chunk_entries,
        mass_bins=args.mass_bins,
        subset=args.subset,
        partitions=args.partitions,
        **executor_kwargs(args),
        plot=not args.no_plot,
        manifests=args.manifest,
    )
    return 0
