"""The read floor of the di-muon benchmark: plain uproot reading just the six branches the selection
needs (decompression and deserialisation, nothing else), one process, one core.

    python -m bench.read_floor FILE [FILE ...]
"""

from __future__ import annotations

import argparse

import uproot

from jobs.dimuon.selection import SCHEMA_BRANCHES

BRANCHES = SCHEMA_BRANCHES["nanoaod"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.read_floor", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    events = 0
    for path in args.files:
        with uproot.open(path) as f:
            for arrays in f["Events"].iterate(BRANCHES, step_size="200 MB"):
                events += len(arrays)
    print(f"read {events} events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
