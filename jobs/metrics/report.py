"""report.html: the summary rendered through templates/report.html.j2 (the page's layout lives there,
not in code), with the plots embedded as base64 PNG so that the page reads on its own."""

from __future__ import annotations

import base64
import os
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

TEMPLATE = "report.html.j2"


def number(v: Any) -> Any:
    """A table cell: floats to 4 significant digits (whole numbers from 10^4 on), ints with thousands
    separators, None empty; anything else as it is (escaped by the template)."""
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else v


_env = Environment(
    loader=PackageLoader("jobs.metrics", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["number"] = number


def render_html(summary: dict[str, Any], plots: dict[str, str], staging: str) -> str:
    """The page for `summary`; `plots` ({file: title}) are read from `staging` and embedded."""
    images = []
    for name, title in plots.items():
        with open(os.path.join(staging, name), "rb") as f:
            images.append({"file": name, "title": title, "base64": base64.b64encode(f.read()).decode()})
    return _env.get_template(TEMPLATE).render(s=summary, images=images)
