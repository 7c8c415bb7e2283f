"""Every Parquet output directory of the DL-trigger chain opens as a dataset with the standard readers
(pandas, pyarrow.dataset, Spark): the sidecars beside the data (_SUCCESS, _summary.json,
_metrics.json, _scaler.json) are named so that they skip them. Real jobs on a generated Delphes
sample: jobs.ingest, then jobs.prepare."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.dataset as pads
import pytest

from jobs.core.storage import METRICS_FILE, SUMMARY_FILE
from jobs.dltrigger_schema import CLASSES, SAMPLES, SCALER_FILE
from jobs.generate.delphes import generate
from jobs.ingest import job as ingest
from jobs.prepare import job as prepare


@pytest.fixture(scope="module")
def chain(tmp_path_factory, spark):
    d = tmp_path_factory.mktemp("chain")
    generate(events=120, output=str(d / "delphes"), files=1, seed=11)
    ingest.run([f"{n}={d / 'delphes' / SAMPLES[n]}" for n in CLASSES], str(d / "features"), spark=spark)
    prepare.run(str(d / "features"), str(d / "prepared"), spark=spark, test_fraction=0.3)
    return d


def expected_rows(chain, rel: str) -> int:
    if rel == "features":
        summary = json.loads((chain / "features" / SUMMARY_FILE).read_text())
        return sum(c["events_written"] for c in summary["classes"].values())
    splits = json.loads((chain / "prepared" / SUMMARY_FILE).read_text())["splits"]
    return sum(s["events"] for name, s in splits.items() if rel in ("prepared", f"prepared/{name}"))


def test_sidecars_are_underscored(chain):
    assert {SUMMARY_FILE, METRICS_FILE, "_SUCCESS"} <= {p.name for p in (chain / "features").iterdir()}
    assert {SUMMARY_FILE, METRICS_FILE, SCALER_FILE} <= {p.name for p in (chain / "prepared").iterdir()}
    sidecars = [p for p in chain.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert sidecars and all(p.name.startswith("_") for p in sidecars if "delphes" not in p.parts)


@pytest.mark.parametrize("rel", ["features", "prepared", "prepared/train", "prepared/test"])
def test_opens_with_pandas_pyarrow_and_spark(chain, spark, rel):
    path = str(chain / rel)
    n = expected_rows(chain, rel)
    assert n > 0
    assert len(pd.read_parquet(path)) == n
    assert pads.dataset(path, format="parquet").count_rows() == n
    # train/ and test/ are two datasets, not partitions of one: Spark reads their parent only when
    # told to look into subdirectories (pandas and pyarrow do so by default)
    reader = spark.read.option("recursiveFileLookup", "true") if rel == "prepared" else spark.read
    assert reader.parquet(path).count() == n
