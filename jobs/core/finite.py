"""Finite or refused: where numbers enter a stage (computed features, a Parquet input, a scaler, a
training batch, a prediction), a NaN or an infinity is bad input, named with the file, the column (and
feature) and how many. One NaN otherwise spreads silently: a scaler's mean, every scaled value, the
loss, the AUC, each stage exiting 0."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jobs.core.errors import BadInputError


def non_finite(values: np.ndarray, names: Sequence[str] | None = None) -> tuple[int, str]:
    """(how many values are NaN or ±inf, the name of the first feature holding one) of an array whose
    last axis is the feature axis named by `names` (none: no feature named)."""
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if not count or not names or values.ndim < 1 or values.shape[-1] != len(names):
        return count, ""
    per_feature = bad.reshape(-1, values.shape[-1]).any(axis=0)
    return count, names[int(np.argmax(per_feature))]


def check_finite(
    source: str, columns: Mapping[str, np.ndarray], names: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Refuse, naming `source`, the first column holding a non-finite value: how many, and in which
    feature when `names` names the column's last axis."""
    for column, values in columns.items():
        if not np.issubdtype(np.asarray(values).dtype, np.floating):
            continue
        count, feature = non_finite(np.asarray(values), (names or {}).get(column))
        if count:
            where = f"{column}[{feature}]" if feature else column
            raise BadInputError(source, f"{count:,} non-finite value(s) (NaN or infinity) in {where}")
