"""``python -m jobs.partition``: the stage's command line (exit 2 on bad input, see jobs.core.cli)."""

from jobs.core import cli
from jobs.partition.job import main

if __name__ == "__main__":
    cli.run_and_exit(main)
