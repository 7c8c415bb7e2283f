"""The driver's plan of jobs.prepare's input: the Parquet files of a jobs.ingest output (hive
directories label=K), each checked against the ingestion contract and counted from its footer alone,
footers read in parallel (a few requests per file, so the plan does not grow with the data). The
data itself is only ever read inside the Spark tasks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from jobs.core.errors import BadInputError
from jobs.core.storage import check_complete, check_regular_files, filesystem, is_local
from jobs.core.store_probe import check_input_dir
from jobs.dltrigger_schema import (
    CLASS_TITLES,
    ENTRY_COLUMN,
    FEATURES_HLF_COLUMN,
    FEATURES_LABEL_COLUMN,
    FEATURES_PARTICLES_COLUMN,
    N_CLASSES,
    SOURCE_FILE_COLUMN,
)

FOOTER_THREADS = 32
_LABEL_DIR = re.compile(rf"(?:^|/){FEATURES_LABEL_COLUMN}=([^/]*)/")


@dataclass(frozen=True)
class InputFile:
    """One Parquet file of the input: its URL, class (from its label=K directory), its path relative
    to the input root (location-independent), its row count and its index in sorted order."""

    url: str
    label: int
    rel: str
    rows: int
    index: int
    has_label_column: bool = False


def _type_name(t) -> str:
    """An Arrow type in Spark SQL's spelling, as the messages have always named them."""
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"array<{_type_name(t.value_type)}>"
    if pa.types.is_dictionary(t):
        return _type_name(t.value_type)
    names = {"float": "float", "double": "double", "int8": "tinyint", "int16": "smallint",
             "int32": "int", "int64": "bigint", "string": "string", "large_string": "string"}  # fmt: skip
    return names.get(str(t), str(t))


def _is_array_of(t, inner) -> bool:
    import pyarrow as pa

    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    return any(f(t) for f in lists) and inner(t.value_type)


def _is_float(t) -> bool:
    import pyarrow as pa

    return pa.types.is_float32(t) or pa.types.is_float64(t)


def _is_string(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_int(t) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t)


EXPECTED = {
    FEATURES_HLF_COLUMN: ("array<float>", lambda t: _is_array_of(t, _is_float)),
    FEATURES_PARTICLES_COLUMN: (
        "array<array<float>>",
        lambda t: _is_array_of(t, lambda e: _is_array_of(e, _is_float)),
    ),
    SOURCE_FILE_COLUMN: ("string", _is_string),
    ENTRY_COLUMN: ("an integer", _is_int),
}


def check_schema(schema, url: str) -> None:
    """The ingestion contract, with the culprit named: column present and of a usable type."""
    names = schema.names
    missing = [name for name in EXPECTED if name not in names]
    if missing:
        raise BadInputError(
            url,
            f"not an ingestion output: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(names) or 'none'})",
        )
    for name, (want, ok) in EXPECTED.items():
        t = schema.field(name).type
        if not ok(t):
            raise BadInputError(url, f"column {name} is {_type_name(t)}, expected {want}")
    if FEATURES_LABEL_COLUMN in names and not _is_int(schema.field(FEATURES_LABEL_COLUMN).type):
        t = schema.field(FEATURES_LABEL_COLUMN).type
        raise BadInputError(url, f"column {FEATURES_LABEL_COLUMN} is {_type_name(t)}, expected an integer")


def _footer(fs, path: str, url: str) -> tuple[int, bool]:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
            schema = meta.schema.to_arrow_schema()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise BadInputError(url, f"not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None
    check_schema(schema, url)
    return meta.num_rows, FEATURES_LABEL_COLUMN in schema.names


def list_inputs(url: str) -> list[InputFile]:
    """Every Parquet file under the ingestion output `url`, planned and checked (see the module)."""
    check_input_dir(url, "--input", "the jobs.ingest output")
    fs, root = filesystem(url)
    root = root.rstrip("/")
    paths = sorted(
        p for p in fs.find(root)
        if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith((".", "_"))
    )  # fmt: skip
    if not paths:
        raise BadInputError(url, "holds no .parquet file (empty input; expected the jobs.ingest output)")
    check_complete(url, required=True)
    check_regular_files([p if "://" not in url else fs.unstrip_protocol(p) for p in paths])
    rels = [p[len(root) + 1 :] for p in paths]
    labels = []
    for p, rel in zip(paths, rels, strict=True):
        found = _LABEL_DIR.findall("/" + rel)
        if not found:
            raise BadInputError(_url(fs, p, url), f"not under a {FEATURES_LABEL_COLUMN}=K directory")
        try:
            labels.append(int(found[-1]))
        except ValueError:
            raise BadInputError(_url(fs, p, url), f"label value {found[-1]!r} is not an integer") from None
    bad = sorted({k for k in labels if not 0 <= k < N_CLASSES})
    if bad:
        raise BadInputError(url, f"label value(s) {bad} outside 0..{N_CLASSES - 1}")
    urls = [_url(fs, p, url) for p in paths]
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(paths))) as pool:
        footers = list(pool.map(lambda a: _footer(fs, a[0], a[1]), zip(paths, urls, strict=True)))
    return [
        InputFile(u, k, rel, rows, i, has_label)
        for i, (u, k, rel, (rows, has_label)) in enumerate(zip(urls, labels, rels, footers, strict=True))
    ]


def list_all(urls: Sequence[str]) -> list[InputFile]:
    """The Parquet files of several ingestion outputs (the partitions so far), numbered across all of
    them; a file's relative path is prefixed by its input's position, so no two files share one."""
    if len(urls) == 1:
        return list_inputs(urls[0])
    out: list[InputFile] = []
    for n, url in enumerate(urls):
        for f in list_inputs(url):
            out.append(InputFile(f.url, f.label, f"{n:05d}/{f.rel}", f.rows, len(out), f.has_label_column))
    return out


def _url(fs, path: str, template: str) -> str:
    return path if is_local(template) else fs.unstrip_protocol(path)


def class_counts(files: list[InputFile], url: str) -> dict[int, int]:
    """Events per class, checked: every class 0..N_CLASSES-1 present."""
    counts = {k: 0 for k in range(N_CLASSES)}
    for f in files:
        counts[f.label] += f.rows
    if not any(counts.values()):
        raise BadInputError(url, "holds no events (empty input)")
    absent = [k for k in range(N_CLASSES) if not counts[k]]
    if absent:
        names = ", ".join(f"{k} ({CLASS_TITLES[k]})" for k in absent)
        raise BadInputError(url, f"class(es) {names} have no events; undersampling needs all {N_CLASSES}")
    return counts
