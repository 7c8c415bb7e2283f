"""Dataset partitions: named, recorded sets of input files whose membership never changes.

A partition is claimed once in the partition log (jobs.core.partition_log) with each file's URL,
size and version (mtime locally, ETag on an object store); its claim entry is its manifest, the
URL a stage is given. A file belongs to at most one partition of a source (the inputs and output
root of a DAG), whatever arrives later. A partition is done when a stage logged its result (the
folder holding its histograms or features); rerunning it logs a new result, which replaces the old
one in every sum (the latest result of a key counts, once). A file whose size or version changed
after its partition recorded it is named and its partition marked stale; rerunning the partition
reads the new content.

Keys: by night (the default) the run's night, `2026-12-07` (`2026-12-07.2` for a second claim that
night); by folder the first folder below the input (`Run2012B`, later arrivals `Run2012B@<night>`);
by hash the stable bucket of the file name (`03/16`, later arrivals `03/16@<night>`)."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from jobs.core.errors import BadInputError, UsageError
from jobs.core.listing import GLOB_CHARS, expand_inputs
from jobs.core.partition_log import Entry, read_entry, read_log, settle
from jobs.core.storage import filesystem

log = logging.getLogger(__name__)

SCHEMES_HELP = "night, folder or hash/N"
MAX_BUCKETS = 4096


def partitions_root(output_root: str, dag_id: str) -> str:
    return f"{output_root.rstrip('/')}/{dag_id}/partitions"


@dataclass(frozen=True)
class Source:
    """What a partition is a partition of: the named input patterns (`{"input": [...]}` or one list
    per class) and the output root its results go under."""

    inputs: dict[str, list[str]]
    output_root: str

    def record(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "output_root": self.output_root.rstrip("/")}

    @classmethod
    def of(cls, body: dict[str, Any]) -> Source:
        return cls({k: list(v) for k, v in body.get("inputs", {}).items()}, str(body.get("output_root", "")))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Source) and self.record() == other.record()

    def __hash__(self) -> int:
        return hash(json.dumps(self.record(), sort_keys=True))


@dataclass
class Partition:
    """The folded state of one key: its claim (the manifest), its latest result, its stale files."""

    key: str
    manifest: str
    claim: dict[str, Any]
    result: dict[str, Any] | None = None
    stale: list[str] = field(default_factory=list)

    @property
    def source(self) -> Source:
        return Source.of(self.claim)

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.claim["files"])

    @property
    def owner(self) -> str:
        return str(self.claim.get("run_id", ""))

    @property
    def group(self) -> str:
        return self.key.split("@", 1)[0]


def fold(entries: Iterable[Entry]) -> dict[str, Partition]:
    """The partitions a log describes, by key, in claim order."""
    state: dict[str, Partition] = {}
    for e in entries:
        if e.kind == "claim" and e.key not in state:
            state[e.key] = Partition(e.key, e.url, e.body)
        elif e.kind == "result" and e.key in state:
            state[e.key].result = e.body
            state[e.key].stale = []
        elif e.kind == "stale" and e.key in state:
            state[e.key].stale = sorted(set(state[e.key].stale) | set(e.body.get("files", [])))
    return state


def of_source(state: dict[str, Partition], source: Source) -> list[Partition]:
    return [p for p in state.values() if p.source == source]


# --- files and their versions ---------------------------------------------------------------------------


def file_version(info: dict[str, Any]) -> str:
    """What says a file changed besides its size: the ETag on an object store, the mtime locally."""
    for name in ("ETag", "etag", "mtime", "LastModified", "last_modified"):
        if info.get(name) is not None:
            return str(info[name]).strip('"')
    return ""


def describe(urls: list[str], input_name: str) -> list[dict[str, Any]]:
    """Each file as a manifest records it: URL, size, version, and the input it came from."""
    out = []
    for url in urls:
        fs, path = filesystem(url)
        info = fs.info(path)
        out.append(
            {
                "url": url,
                "size": int(info.get("size") or 0),
                "version": file_version(info),
                "input": input_name,
            }
        )
    return out


def list_source(source: Source) -> list[dict[str, Any]]:
    """Every ROOT file the source's inputs hold now, described."""
    return [
        f
        for name, patterns in source.inputs.items()
        for f in describe(expand_inputs(patterns, ".root"), name)
    ]


def changed_files(recorded: list[dict[str, Any]], now: dict[str, dict[str, Any]]) -> list[str]:
    """The recorded files whose size or version differs from what the store says `now`."""
    return [
        f["url"]
        for f in recorded
        if f["url"] in now and (now[f["url"]]["size"], now[f["url"]]["version"]) != (f["size"], f["version"])
    ]


# --- keys -------------------------------------------------------------------------------------------------


def check_scheme(scheme: str) -> int:
    """The bucket count of `hash/N` (0 for night and folder); anything else is refused."""
    if scheme in ("night", "folder"):
        return 0
    head, _, n = scheme.partition("/")
    if head == "hash" and n.isdigit() and 1 <= int(n) <= MAX_BUCKETS:
        return int(n)
    raise UsageError(f"partition scheme {scheme!r}: choose {SCHEMES_HELP} (1 <= N <= {MAX_BUCKETS})")


def bucket(url: str, n: int) -> str:
    """The stable hash bucket of a file's name: the same whatever else the input holds."""
    width = len(str(n - 1))
    return f"{zlib.crc32(os.path.basename(url).encode()) % n:0{width}d}/{n}"


def _base(pattern: str) -> str:
    """The folder a pattern lists below: a directory itself, or a glob's part before its first wildcard."""
    cut = min((pattern.index(c) for c in GLOB_CHARS if c in pattern), default=len(pattern))
    head = pattern[:cut]
    return head if cut == len(pattern) else head.rsplit("/", 1)[0]


def folder(url: str, patterns: list[str]) -> str | None:
    """The first folder below the input pattern the file came from, None for a file directly in it."""
    for pattern in patterns:
        base = _base(pattern).rstrip("/")
        if url.startswith(base + "/"):
            rest = url[len(base) + 1 :].split("/")
            return rest[0] if len(rest) > 1 else None
    return None


def group_of(f: dict[str, Any], scheme: str, source: Source, night: str) -> str:
    n = check_scheme(scheme)
    if n:
        return bucket(f["url"], n)
    if scheme == "folder":
        return folder(f["url"], source.inputs.get(f["input"], [])) or night
    return night


def fresh_key(group: str, night: str, taken: set[str]) -> str:
    """The key of a new partition of `group`: the group itself the first time, then `group@night`
    (the night itself: `night.2`, `night.3` ...), never one already taken."""
    first = group if group == night or group not in taken else f"{group}@{night}"
    key, n = first, 1
    while key in taken:
        n += 1
        key = f"{first}.{n}"
    return key


# --- what a run takes ------------------------------------------------------------------------------------


@dataclass
class Plan:
    """The partitions a run processes (their manifests), and what it noticed on the way."""

    partitions: list[Partition]
    notes: list[str] = field(default_factory=list)
    latest: str | None = None  # the source's newest manifest (what a cumulative sum is told to add)

    @property
    def manifests(self) -> list[str]:
        return [p.manifest for p in self.partitions]


def claim_new(
    root: str,
    source: Source,
    run_id: str,
    night: str,
    scheme: str,
    files: list[dict[str, Any]],
) -> list[Partition]:
    """Claim every file of `files` that no partition of the source holds, grouped by `scheme`; one
    log entry per new partition, retried against racing writers. Returns this run's partitions."""
    check_scheme(scheme)

    def decide(entries: list[Entry]) -> dict[str, Any] | None:
        state = fold(entries)
        held = {f["url"] for p in of_source(state, source) for f in p.files}
        new = [f for f in files if f["url"] not in held]
        if not new:
            return None
        group = group_of(new[0], scheme, source, night)
        members = [f for f in new if group_of(f, scheme, source, night) == group]
        key = fresh_key(group, night, set(state))
        return {"kind": "claim", "key": key, "run_id": run_id, "night": night, "scheme": scheme,
                "claimed_at": time.time(), "files": members, **source.record()}  # fmt: skip

    state = fold(settle(root, decide))
    return [p for p in of_source(state, source) if p.owner == run_id]


def plan_run(
    root: str,
    source: Source,
    run_id: str,
    night: str,
    *,
    take: str = "new",
    names: list[str] | None = None,
    scheme: str = "night",
    is_live: Callable[[str], bool] = lambda run_id: False,
    orphan_after: float | None = None,
) -> Plan:
    """The partitions a run processes.

    new: this run's own partitions (a retry keeps them), the unfinished ones of runs that are no
    longer live (a failed night), and a new claim of every file no partition holds; all: the same
    plus every finished partition of the source; named: the partitions whose key or group is named
    (nothing is claimed). Changed files are named in the notes and marked stale in the log.

    An unfinished partition of another run is taken over when `is_live` says its run is over, or
    (`orphan_after`, seconds: where the caller cannot ask Airflow) when its claim is older than that;
    a partition processed twice still counts once (the latest result of a key)."""
    if take not in ("new", "all", "named"):
        raise UsageError(f"take {take!r}: choose new, all or named")
    state = fold(read_log(root))
    if take == "named":
        chosen = _named(state, source, names or [], root)
        return Plan(chosen, latest=of_source(state, source)[-1].manifest)
    now = {f["url"]: f for f in list_source(source)}
    notes = mark_stale(root, of_source(state, source), now)
    claimed = claim_new(root, source, run_id, night, scheme, list(now.values()))
    state = fold(read_log(root))
    mine = {p.key for p in claimed}
    orphans = [
        p for p in of_source(state, source)
        if p.key not in mine and p.result is None and (not is_live(p.owner) or _older(p, orphan_after))
    ]  # fmt: skip
    notes += [
        f"partition {p.key} of run {p.owner} has no result (its run failed): taken by this run"
        for p in orphans
    ]
    chosen = [p for p in of_source(state, source) if p.key in mine] + orphans
    if take == "all":
        chosen += [p for p in of_source(state, source) if p.result is not None and p not in chosen]
    everything = of_source(state, source)
    return Plan(chosen, notes, everything[-1].manifest if everything else None)


def _older(p: Partition, seconds: float | None) -> bool:
    return seconds is not None and time.time() - float(p.claim.get("claimed_at") or 0) > seconds


def _named(state: dict[str, Partition], source: Source, names: list[str], root: str) -> list[Partition]:
    """The partitions of the source whose key or group is one of `names`; an unknown name is refused."""
    if not names:
        raise UsageError("partition_keys: name at least one partition (or take new or all)")
    mine = of_source(state, source)
    chosen = []
    for name in names:
        found = [p for p in mine if name in (p.key, p.group)]
        if not found:
            other = [p for p in state.values() if name in (p.key, p.group)]
            why = (
                f"was recorded for other inputs or another output root ({other[0].manifest})"
                if other
                else f"is not recorded under {root} (known: {', '.join(p.key for p in mine[:20]) or 'none'})"
            )
            raise BadInputError(f"partition {name}", why)
        chosen += [p for p in found if p not in chosen]
    return chosen


def mark_stale(root: str, partitions: list[Partition], now: dict[str, dict[str, Any]]) -> list[str]:
    """Log a stale mark for each partition holding a file that changed since it was recorded (or
    read: a result records the versions it read); one note per file."""
    notes = []
    for p in partitions:
        recorded = (p.result or {}).get("files") or p.files
        changed = [u for u in changed_files(recorded, now) if u not in p.stale]
        if not changed:
            continue
        notes += [
            f"{u} changed after partition {p.key} recorded it: partition {p.key} is stale" for u in changed
        ]

        def decide(
            entries: list[Entry], key: str = p.key, files: list[str] = changed
        ) -> dict[str, Any] | None:
            current = fold(entries)[key]
            todo = [u for u in files if u not in current.stale]
            return {"kind": "stale", "key": key, "files": todo} if todo else None

        settle(root, decide)
    return notes


# --- what a stage does with a manifest -------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A claim as a stage reads it: the key, the files, and the log it belongs to."""

    url: str
    key: str
    files: list[dict[str, Any]]
    source: Source

    @property
    def root(self) -> str:
        return self.url.rsplit("/log/", 1)[0]


def source_inputs(manifests: list[Manifest]) -> list[str]:
    """What an output must stay out of: the source's input patterns (an output inside an input folder
    would be listed as new input the next night) and the recorded files themselves."""
    patterns = [p for m in manifests for ps in m.source.inputs.values() for p in ps]
    return list(dict.fromkeys([*patterns, *(f["url"] for m in manifests for f in m.files)]))


def read_manifest(url: str, output: str | None = None) -> Manifest:
    """A partition's manifest, checked: a claim, of a format we read, logged under its own key, and
    (given the stage's `output`) of the output root the stage writes under."""
    body = read_entry(url)
    if body.get("kind") != "claim" or "/log/" not in url:
        raise BadInputError(url, "is not a partition manifest (a claim of the partition log)")
    m = Manifest(url, str(body["key"]), list(body["files"]), Source.of(body))
    if output is not None and not (output.rstrip("/") + "/").startswith(m.source.output_root + "/"):
        raise BadInputError(url, f"belongs to output root {m.source.output_root}, not to the output {output}")
    return m


def check_files(manifests: list[Manifest]) -> list[str]:
    """Every file the manifests recorded must still exist (a partition never silently shrinks);
    returns the files whose content changed since the partition's last read (its latest result, else
    its claim), each logged as a warning (the run reads the new content; its metrics list them as
    `changed_files`)."""
    missing, changed = [], []
    for m in manifests:
        partition = fold(read_log(m.root)).get(m.key)
        read = (partition.result or {}).get("files") if partition else None
        last_read = {f["url"]: f for f in read or []}
        for f in [last_read.get(f["url"], f) for f in m.files]:
            fs, path = filesystem(f["url"])
            try:
                info = fs.info(path)
            except FileNotFoundError:
                missing.append(f["url"])
                continue
            if (int(info.get("size") or 0), file_version(info)) != (f["size"], f["version"]):
                log.warning(
                    "%s changed after partition %s recorded it; reading its new content", f["url"], m.key
                )
                changed.append(f["url"])
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise BadInputError(", ".join(missing[:3]) + more, "recorded in a partition but gone from the store")
    return changed


def log_results(manifests: list[Manifest], outputs: dict[str, str], run: str) -> None:
    """Log each partition's result (its output folder and the versions it read), after the stage's
    output is committed: from then on, sums take this result for the key."""
    for m in manifests:
        now = {f["url"]: f for f in describe([f["url"] for f in m.files], "")}
        files = [{**f, "size": now[f["url"]]["size"], "version": now[f["url"]]["version"]} for f in m.files]
        settle(
            m.root,
            _once({"kind": "result", "key": m.key, "output": outputs[m.key], "run": run, "files": files}),
        )


def _once(body: dict[str, Any]) -> Callable[[list[Entry]], dict[str, Any] | None]:
    """A decision that appends `body` until the log holds it (a lost race tries again)."""
    body = {**body, "id": uuid.uuid4().hex}

    def decide(entries: list[Entry]) -> dict[str, Any] | None:
        return None if any(e.body.get("id") == body["id"] for e in entries) else body

    return decide


def results_of(root: str, source: Source) -> list[Partition]:
    """The finished partitions of a source, in claim order (what a cumulative sum adds)."""
    return [p for p in of_source(fold(read_log(root)), source) if p.result is not None]


def result_outputs(manifest: str, window: int = 0) -> list[str]:
    """The result folders of the source's finished partitions, oldest first: all of them, or the last
    `window` (what a stage that learns from all the data so far reads)."""
    m = read_manifest(manifest)
    done = results_of(m.root, m.source)
    if not done:
        raise BadInputError(manifest, "no partition of these inputs has a result yet")
    chosen = done[-window:] if window > 0 else done
    return list(dict.fromkeys(str(p.result["output"]) for p in chosen))  # type: ignore[index]


def safe_key(key: str) -> str:
    """A key as a folder name: `03/16` -> `03-16`."""
    name = "".join(c if c.isalnum() or c in "._@-" else "-" for c in key)
    return name if name.strip(".") else f"_{name}"  # never `.` or `..`
