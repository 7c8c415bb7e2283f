"""What a DAG says about a stage, independent of where it runs: the job module, its (templated)
arguments, its kind and its resource request. Backends turn this into an Airflow task."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

StageKind = Literal["spark", "python", "tf-multiworker"]

# An argument that renders to this is left out of the command line (see `flag`).
OMIT = "__colliderflow_omit__"


def flag(name: str, condition: str) -> str:
    """A templated on/off option: `name` when the Jinja expression `condition` is true, else nothing
    (e.g. flag("--bucketing", "params.bucketing")). Every backend drops the OMIT marker after rendering."""
    return f"{{{{ '{name}' if ({condition}) else '{OMIT}' }}}}"


def option(name: str, value: str) -> list[str]:
    """A templated option with a value, left out when the Jinja expression `value` is empty or None
    (e.g. option("--tree", "params.tree") for a nullable Param)."""
    return [flag(name, value), f"{{{{ ({value}) if ({value}) else '{OMIT}' }}}}"]


# An argument that starts with this renders to an option repeated once per value (see `each`).
EACH = "__colliderflow_each__"


def each(values: str, option: str, prefix: str = "") -> str:
    """A templated option given once per value of the Jinja expression `values` (a list Param, e.g.
    each("params.input", "--input")): `--input a --input 'b c'`, each path one argument whatever
    characters it holds (spaces, quotes, newlines), never split into words. A single string counts as
    one value. Every backend expands it after rendering (`command_args`)."""
    return f"{EACH}\t{option}\t{prefix}\t{{{{ ({values}) | tojson }}}}"


def _each_args(rendered: str) -> list[str]:
    _, option, prefix, payload = rendered.split("\t", 3)
    try:
        values = json.loads(payload)
    except ValueError:
        values = payload
    values = [values] if isinstance(values, str) else values
    return [arg for value in values for arg in (option, f"{prefix}{value}")]


def command_args(args: Sequence) -> list[str]:
    """Rendered arguments as the job receives them: OMIT dropped, `each` expanded."""
    out: list[str] = []
    for arg in map(str, args):
        if arg.startswith(EACH):
            out += _each_args(arg)
        elif arg != OMIT:
            out.append(arg)
    return out


def values_of(rendered: str) -> list[str]:
    """The paths a rendered list Param holds (`{{ params.input | tojson }}`); a plain string is one."""
    try:
        values = json.loads(rendered)
    except ValueError:
        return [rendered] if rendered.strip() else []
    if isinstance(values, str):
        return [values] if values.strip() else []
    return [str(v) for v in values] if isinstance(values, list) else [rendered]


@dataclass(frozen=True)
class Resources:
    """A stage's resource request; each backend maps it to what it understands. The fields typed
    `int | str` may be Jinja (e.g. "{{ params.executors }}"): Spark executors and cores, and a
    tf-multiworker stage's GPUs and workers, are rendered per run on Kubernetes."""

    cpu: float = 1.0
    memory: str = "2Gi"
    gpu: int | str = 0  # per pod (per training worker)
    executors: int | str = 1
    executor_cores: int | str = 1
    executor_memory: str = "2g"
    workers: int | str = 1  # training processes for tf-multiworker


@dataclass(frozen=True)
class Stage:
    """Run ``python -m jobs.<module> <args>`` as task `task_id`. `args` may hold Jinja templates."""

    task_id: str
    module: str
    args: Sequence[str] = ()
    kind: StageKind = "python"
    resources: Resources = field(default_factory=Resources)
    outlets: Sequence = ()
    pool: str | None = None
    # Kubernetes backend: an image role (spark, tensorflow, tensorflow-gpu) or a full image reference;
    # None picks by kind (spark -> Spark image, otherwise the TensorFlow image).
    image: str | None = None
