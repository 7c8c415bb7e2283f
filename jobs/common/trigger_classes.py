"""The three DL-trigger classes: short name, reference sample name and label (label = index).
Shared by the generator and the ingestion so that both spell the samples the same way."""

from __future__ import annotations

from jobs.common.errors import UsageError

CLASSES: tuple[str, ...] = ("qcd", "ttbar", "wjets")
SAMPLES: dict[str, str] = {
    "qcd": "qcd_lepFilter_13TeV",
    "ttbar": "ttbar_lepFilter_13TeV",
    "wjets": "Wlnu_lepFilter_13TeV",
}
LABELS: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
TREE = "Delphes"


def class_name(name: str) -> str:
    """Accept the short name or the reference sample name; anything else is a usage error."""
    for short, sample in SAMPLES.items():
        if name in (short, sample):
            return short
    known = ", ".join(f"{s} ({SAMPLES[s]})" for s in CLASSES)
    raise UsageError(f"--input: unknown class {name!r}; known classes: {known}")
