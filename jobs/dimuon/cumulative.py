"""The di-muon result over every partition so far, built by adding the partitions' histograms (never
by rereading ROOT files): the latest result of each partition counts once, so rerunning a partition
replaces its contribution. Same output contract as a `dimuon` output, plus `partitions.json`.

    python -m jobs.dimuon.cumulative --manifest URL --output DIR

`--manifest` is any manifest of the source (jobs.core.partitions): its log and inputs say which
partitions to add.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence

import hist
import numpy as np

from jobs.core import cli
from jobs.core.commit import atomic_output_dir, claim_output
from jobs.core.errors import BadInputError
from jobs.core.partitions import Partition, read_manifest, results_of
from jobs.core.storage import METRICS_FILE, filesystem, write_json
from jobs.dimuon.job import (
    COUNTS_FILE,
    DimuonResult,
    new_histograms,
    spectrum_peaks,
    write_cutflow,
    write_histograms,
)

log = logging.getLogger("jobs.dimuon.cumulative")

REBUILDS = 3  # builds in a row when partitions finish while one is being written


def read_result(p: Partition) -> tuple[DimuonResult, str, dict]:
    """One partition's histograms, counts and schema, as its result folder holds them."""
    folder = str(p.result["output"])  # type: ignore[index]
    fs, path = filesystem(folder)
    try:
        cutflow = json.loads(fs.cat_file(f"{path}/cutflow.json"))
        summary = json.loads(fs.cat_file(f"{path}/partition.json"))
        with fs.open(f"{path}/{COUNTS_FILE}", "rb") as f, np.load(f) as counts:
            hists = {name: as_hist(name, counts[name], folder) for name in counts.files}
    except FileNotFoundError:
        raise BadInputError(
            folder, f"the result of partition {p.key} is gone (rerun the partition)"
        ) from None
    counts = np.array([c["events"] for c in cutflow["cuts"]], dtype=np.int64)
    return DimuonResult(hists, counts, int(summary["pairs"])), str(cutflow["schema"]), summary


def as_hist(name: str, counts: np.ndarray, folder: str) -> hist.Hist:
    """Stored counts (under- and overflow included) as the stage's own histogram; a histogram this
    stage does not write, or of a binning it does not write, never adds."""
    h = new_histograms(max(len(counts) - 2, 1)).get(name)
    if h is None or h.view(flow=True).shape != counts.shape:
        raise BadInputError(folder, f"histogram {name} is not one this colliderflow writes ({counts.shape})")
    h.view(flow=True)[...] = counts
    return h


def add_up(partitions: list[Partition]) -> tuple[DimuonResult, str, list[dict]]:
    """The sum of the partitions' results, and after each partition the figures so far (the
    cumulative curve of the trends: pairs, the Z peak with its uncertainties); partitions of different
    schemas do not add."""
    total: DimuonResult | None = None
    schema = ""
    rows = []
    for p in partitions:
        result, part_schema, summary = read_result(p)
        if schema and part_schema != schema:
            raise BadInputError(
                str(p.result["output"]),  # type: ignore[index]
                f"partition {p.key} has schema {part_schema}, the others {schema}: they do not add",
            )
        schema = part_schema
        total = result if total is None else total + result
        so_far = {"events": int(total.counts[0]), "pairs": int(total.pairs),
                  "peaks": spectrum_peaks(total.hists["dimuon_mass"])}  # fmt: skip
        rows.append({"key": p.key, "result": p.result.get("id"), "run": p.result.get("run"),  # type: ignore[union-attr]
                     "output": p.result["output"],  # type: ignore[index]
                     "events": summary["events"], "pairs": summary["pairs"], "files": summary["files"],
                     "stale": p.stale, "so_far": so_far})  # fmt: skip
    assert total is not None
    return total, schema, rows


def build(manifest: str, output: str, plot: bool = True) -> dict:
    """Write the cumulative result into `output` (replaced atomically); rebuilt when partitions finished
    meanwhile, so the last build holds every result logged before it started."""
    m = read_manifest(manifest)
    metrics: dict = {}
    for _ in range(REBUILDS):
        done = results_of(m.root, m.source)
        if not done:
            raise BadInputError(manifest, "no partition of these inputs has a result yet")
        if up_to_date(output, done):
            log.info("cumulative: %s already holds the %d partition result(s) so far", output, len(done))
            return metrics or _read_metrics(output)
        metrics = _write(done, output, m.root, plot)  # the next round checks nothing finished meanwhile
    return metrics


def up_to_date(output: str, done: list[Partition]) -> bool:
    """Whether the complete cumulative result at `output` was built from exactly these results."""
    fs, path = filesystem(output)
    try:
        if not fs.exists(f"{path}/_SUCCESS"):
            return False
        rows = json.loads(fs.cat_file(f"{path}/partitions.json"))["partitions"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return [(r.get("key"), r.get("result")) for r in rows] == [(p.key, p.result.get("id")) for p in done]  # type: ignore[union-attr]


def _read_metrics(output: str) -> dict:
    fs, path = filesystem(f"{output.rstrip('/')}/{METRICS_FILE}")
    return json.loads(fs.cat_file(path))


def _write(done: list[Partition], output: str, root: str, plot: bool) -> dict:
    t0 = time.perf_counter()
    claim_output(output, [str(p.result["output"]) for p in done])  # type: ignore[index]
    total, schema, rows = add_up(done)
    hists: dict[str, hist.Hist] = total.hists
    metrics = {
        "stage": "dimuon.cumulative",
        "events": int(total.counts[0]),
        "pairs": int(total.pairs),
        "partition_count": len(rows),
        "files_read": sum(r["files"] for r in rows),
        "schema": schema,
        "peaks": spectrum_peaks(hists["dimuon_mass"]),
        "wall_seconds": time.perf_counter() - t0,
    }
    with atomic_output_dir(output) as out:
        write_histograms(os.path.join(out, "histograms.root"), hists)
        write_cutflow(os.path.join(out, "cutflow.json"), schema, total.counts, {})
        write_json(os.path.join(out, "partitions.json"), {"log": root, "partitions": rows})
        write_json(os.path.join(out, METRICS_FILE), metrics)
        if plot:
            from jobs.dimuon.plot import plot_spectrum

            plot_spectrum(hists["dimuon_mass"], os.path.join(out, "dimuon_mass.png"),
                          events=int(total.counts[0]), pairs=int(total.pairs))  # fmt: skip
    log.info(
        "cumulative: %d partitions, %d events, %d pairs -> %s",
        len(rows),
        total.counts[0],
        total.pairs,
        output,
    )
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(
        "dimuon.cumulative",
        __doc__.splitlines()[0],
        "python -m jobs.dimuon.cumulative --manifest runs/cms_dimuon/partitions/log/00000001.json "
        "--output runs/cms_dimuon/cumulative",
    )
    parser.add_argument("--manifest", action="append", required=True, help="a manifest of the source (URL)")
    parser.add_argument("--output", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--no-plot", action="store_true", help="skip dimuon_mass.png")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    build(args.manifest[0], args.output, plot=not args.no_plot)
    return 0


if __name__ == "__main__":
    cli.run_and_exit(main)
