"""Synthetic sample generators (toy events, not a physics simulation): NanoAOD- or Delphes-layout ROOT files.

    python -m jobs.generate nanoaod|delphes --events N --output DIR [--files K]

Writes physically shaped ROOT files so that every selection has real work to do, deterministically for
a seed: toy events for demos, tests and benchmarks, not a physics simulation (use real CMS open data or
Delphes output for physics). The generators live beside this module (jobs.generate.nanoaod,
jobs.generate.delphes); it is the one command line for both.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from collections.abc import Sequence

from jobs.core import cli
from jobs.core.commit import check_free_space, claim_output
from jobs.core.storage import is_local

KINDS = {
    "nanoaod": "jobs.generate.nanoaod",
    "delphes": "jobs.generate.delphes",
}
# Bounds on what one command may ask for: a mistyped --events (10^12 filled 3.2 GB a minute) is
# refused at once; within them the free space is checked against the generator's BYTES_PER_EVENT.
MAX_EVENTS = 1_000_000_000
MAX_FILES = 10_000


def build_parser() -> argparse.ArgumentParser:
    example = "python -m jobs.generate delphes --events 10000 --files 2 --output data/delphes"
    parser = cli.new_parser("generate", __doc__.splitlines()[0], example)
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind, module in KINDS.items():
        p = sub.add_parser(
            kind,
            help=f"synthetic {kind}-layout sample",
            description=f"Synthetic {kind}-layout sample (toy events, not a physics simulation).",
            epilog=f"example:\n  python -m jobs.generate {kind} --events 10000 --output data/{kind}",
            formatter_class=cli.HelpFormatter,
            allow_abbrev=False,
        )
        p.add_argument("--events", type=int, required=True, help="events in total (per class for delphes)")
        p.add_argument("--output", required=True, help="output directory (local path or fsspec URL)")
        p.add_argument("--files", type=int, default=1, help="number of files to split the events over")
        p.add_argument("--seed", type=int, default=42, help="random seed (same seed, same files)")
        if kind == "delphes":
            p.add_argument(
                "--muon-branch",
                choices=["MuonTight", "Muon"],
                default="MuonTight",
                help="collection of the tight muons: MuonTight (reference card) or Muon (standard cards)",
            )
        p.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.check_range(args.events, "--events", 1, MAX_EVENTS)
    cli.check_range(args.files, "--files", 1, MAX_FILES)
    cli.check_range(args.seed, "--seed", 0, 2**32 - 1)  # numpy's seeds are non-negative
    if args.files > args.events:
        raise cli.UsageError(f"--files must be between 1 and --events, got {args.files}")
    claim_output(args.output, [])  # on a store: reachable, bucket there, writable; before any event
    generator = importlib.import_module(args.module)
    # the files are written beside a local output, or into a local staging directory for a store
    staging = args.output if is_local(args.output) else tempfile.gettempdir()
    check_free_space(staging, args.events * generator.BYTES_PER_EVENT, f"--events {args.events}")
    extra = {"muon_branch": args.muon_branch} if args.kind == "delphes" else {}
    generator.generate(events=args.events, output=args.output, files=args.files, seed=args.seed, **extra)
    return 0
