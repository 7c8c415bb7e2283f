"""The training history (history.json, one entry per epoch, written by jobs.train): its strict reader
and the loss/accuracy-curve plot, shared by jobs.evaluate and the run report of jobs.metrics."""

from __future__ import annotations

import json

from jobs.core.errors import BadInputError
from jobs.core.storage import filesystem


def plot_history(history: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", a1), ("accuracy", a2)):
        for prefix, label in (("", "train"), ("val_", "test")):
            values = [e.get(prefix + key) for e in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=label)
        ax.set(xlabel="epoch", ylabel=key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_history(path: str) -> list[dict]:
    fs, local = filesystem(path)
    if not fs.exists(local):
        raise BadInputError(path, "no such file")
    try:
        with fs.open(local, "r") as f:
            history = json.load(f)
    except json.JSONDecodeError as exc:
        raise BadInputError(path, f"is not JSON: {exc}") from None
    if not isinstance(history, list) or not all(isinstance(e, dict) and "epoch" in e for e in history):
        raise BadInputError(
            path, "expected a list of per-epoch entries with 'epoch' (jobs.train history.json)"
        )
    return history
