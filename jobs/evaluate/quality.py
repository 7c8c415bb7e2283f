"""The model-quality verdict of an evaluation: per class, the ROC AUC against a floor (`--min-auc`) and
against the same DAG's previous successful run (`--baseline`, its evaluation folder) with a tolerated
drop (`--max-auc-drop`). The evaluation stores the verdict in its _metrics.json (`quality`) and stays a
success: the run report shows it (red below the floor, flagged drops), and the DAG's last task fails
the run on it, so the report of a model that did not learn exists and says why."""

from __future__ import annotations

import json
import logging
from typing import Any

from jobs.core.errors import UsageError
from jobs.core.storage import METRICS_FILE, filesystem

log = logging.getLogger("jobs.evaluate")
QUALITY_KEY = "quality"


def check_thresholds(min_auc: float, max_drop: float) -> None:
    if not 0.0 <= min_auc <= 1.0:
        raise UsageError(f"--min-auc must be between 0 and 1 (0: no floor), got {min_auc}")
    if not 0.0 <= max_drop <= 1.0:
        raise UsageError(f"--max-auc-drop must be between 0 and 1, got {max_drop}")


def baseline_auc(url: str | None) -> dict[str, float] | None:
    """The per-class AUC of a previous evaluation folder; None (with a warning) when there is none to
    compare with: the first run, or a previous output that is gone or unreadable. Not an error: the
    DAG passes the previous successful run's evaluation, which a run that skipped its stages (no input
    that night) or one on another output root never wrote, and the floor still applies."""
    if not url:
        return None
    try:
        fs, path = filesystem(f"{url.rstrip('/')}/{METRICS_FILE}")
        auc = json.loads(fs.cat_file(path))["auc"]
        return {k: float(v) for k, v in auc.items() if v is not None}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("no baseline AUC to compare with at %s (%s)", url, type(exc).__name__)
        return None


def verdict(auc: dict[str, float | None], min_auc: float, baseline: dict[str, float] | None,
            max_drop: float, baseline_url: str | None = None) -> dict[str, Any]:  # fmt: skip
    """What the report and the gate read: the classes below the floor, the drops beyond the tolerance
    against the baseline, and whether the model passes (no class below the floor)."""
    below = {k: v for k, v in auc.items() if v is not None and v < min_auc}
    drops = {
        k: round(baseline[k] - v, 6) for k, v in auc.items() if baseline and k in baseline and v is not None
    }
    flagged = {k: d for k, d in drops.items() if d > max_drop}
    for k, v in below.items():
        log.warning("AUC %s = %.4f is below --min-auc %.4f", k, v, min_auc)
    for k, d in flagged.items():
        log.warning("AUC %s dropped by %.4f against the previous run (tolerance %.4f)", k, d, max_drop)
    return {
        "min_auc": min_auc,
        "below_floor": below,
        "baseline": baseline_url if baseline is not None else None,
        "baseline_auc": baseline,
        "max_auc_drop": max_drop,
        "drops": drops,
        "flagged_drops": flagged,
        "passed": not below,
    }
