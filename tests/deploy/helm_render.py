"""A small renderer for the subset of Helm's Go templating the colliderflow charts use, so the charts can
be rendered and validated where no helm binary exists. Anything outside the subset raises
TemplateError instead of rendering something Helm would not: the charts stay within what is
rendered faithfully here.

Supported: ``{{ .Values.a.b }}``, ``.Release.Name/Namespace/Service``, ``.Chart.Name/Version/AppVersion``,
string/number/bool literals, ``{{- ... -}}`` whitespace trimming, ``{{/* comments */}}``,
``{{- if P }} … {{- else if P }} … {{- else }} … {{- end }}``, ``{{- range $v := .Values.list }}`` and
``{{- range $k, $v := .Values.map }}`` (sorted keys, as Go does; inside, ``.`` is the element and ``$`` the
root, as in Go), pipelines with ``quote``, ``b64enc``,
``toYaml``, ``toJson``, ``nindent N``, ``indent N``, ``default X``, ``required "msg"``, ``not``,
``and``, ``or``, ``eq``, ``ne``, ``lower``, ``trunc N``, ``trimSuffix S``, and ``.Files.Get "path"``.
"""

from __future__ import annotations

import base64
import copy
import json
import pathlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

ACTION = re.compile(r"\{\{(-?)(\s*)(.*?)(\s*)(-?)\}\}", re.DOTALL)


class TemplateError(Exception):
    """The template uses something outside the supported subset, or fails as Helm would."""


@dataclass
class Node:
    kind: str  # text | expr | if | range
    text: str = ""
    branches: list[tuple[str | None, list[Node]]] = field(default_factory=list)  # if: (cond, body)
    var_names: tuple[str, ...] = ()  # range: ($k, $v) or ($v,)
    body: list[Node] = field(default_factory=list)


def _tokens(source: str) -> list[tuple[str, str]]:
    """('text', s) and ('action', s) tokens with Go's trim markers applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1) == "-":
            if not m.group(2):
                raise TemplateError(f"'{{{{-' must be followed by a space: {m.group(0)!r}")
            text = text.rstrip()
        out.append(("text", text))
        body = m.group(3)
        if not (body.startswith("/*") and body.endswith("*/")):
            out.append(("action", body))
        trim_next = m.group(5) == "-"
        pos = m.end()
    tail = source[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def parse(source: str) -> list[Node]:
    tokens = _tokens(source)
    nodes, rest = _parse_block(tokens, 0, top=True)
    return nodes


def _parse_block(tokens: list[tuple[str, str]], i: int, top: bool = False) -> tuple[list[Node], int]:
    """Nodes up to the matching {{ end }} / {{ else }} (returned index points at it)."""
    nodes: list[Node] = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(Node("text", text=value))
            i += 1
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            if top:
                raise TemplateError(f"unexpected {{{{ {value} }}}}")
            return nodes, i
        if word == "if":
            node = Node("if")
            cond: str | None = value[2:].strip()
            i += 1
            while True:
                body, i = _parse_block(tokens, i)
                node.branches.append((cond, body))
                if i >= len(tokens):
                    raise TemplateError("unterminated {{ if }}")
                action = tokens[i][1]
                i += 1
                if action == "end":
                    break
                if action == "else":
                    cond = None
                elif action.startswith("else if "):
                    cond = action[len("else if ") :].strip()
                else:
                    raise TemplateError(f"unsupported {{{{ {action} }}}}")
            nodes.append(node)
        elif word == "range":
            m = re.fullmatch(r"range\s+(\$\w+)(?:\s*,\s*(\$\w+))?\s*:=\s*(.+)", value)
            if not m:
                raise TemplateError(f"only 'range $v := X' / 'range $k, $v := X' are supported: {value!r}")
            names = tuple(n for n in (m.group(1), m.group(2)) if n)
            body, i = _parse_block(tokens, i + 1)
            if i >= len(tokens) or tokens[i][1] != "end":
                raise TemplateError("unterminated {{ range }} (else is not supported)")
            nodes.append(Node("range", text=m.group(3), var_names=names, body=body))
            i += 1
        elif word in ("define", "template", "include", "with", "block", "tpl"):
            raise TemplateError(f"{word!r} is outside the supported subset")
        else:
            nodes.append(Node("expr", text=value))
            i += 1
    if not top:
        raise TemplateError("missing {{ end }}")
    return nodes, i


class Files:
    """`.Files.Get` relative to the chart directory (Helm returns '' for a missing file)."""

    def __init__(self, root: pathlib.Path):
        self.root = root

    def get(self, name: str) -> str:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise TemplateError(f".Files.Get {name!r} leaves the chart")
        return path.read_text() if path.is_file() else ""


def _truthy(v: Any) -> bool:
    return v not in (None, False, 0, "", [], {}) and not (isinstance(v, float) and v == 0.0)


def _to_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict | list):
        raise TemplateError(f"printing a {type(v).__name__} directly; pipe it through toYaml")
    return str(v)


def _to_yaml(v: Any) -> str:
    if v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True, width=10_000).rstrip("\n")


def _indent(n: Any, s: Any) -> str:
    pad = " " * int(n)
    return "\n".join(pad + line for line in _to_str(s).split("\n"))


def _required(msg: str, v: Any) -> Any:
    if v is None or v == "":
        raise TemplateError(msg)
    return v


FUNCS = {
    "quote": lambda *a: " ".join(json.dumps(_to_str(x)) for x in a if x is not None),
    "b64enc": lambda s: base64.b64encode(_to_str(s).encode()).decode(),
    "toYaml": _to_yaml,
    "toJson": lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True),
    "indent": _indent,
    "nindent": lambda n, s: "\n" + _indent(n, s),
    "default": lambda d, v=None: v if _truthy(v) else d,
    "required": _required,
    "not": lambda v: not _truthy(v),
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lower": lambda s: _to_str(s).lower(),
    "trunc": lambda n, s: _to_str(s)[: int(n)],
    "trimSuffix": lambda suf, s: _to_str(s)[: -len(suf)] if suf and _to_str(s).endswith(suf) else _to_str(s),
}


class Renderer:
    def __init__(self, context: dict[str, Any]):
        self.context = context

    def lookup(self, ref: str, scope: dict[str, Any]) -> Any:
        if ref == "$" or ref.startswith("$."):  # $ is the root context, also inside range
            value = self.context
            parts = ref[2:].split(".") if ref != "$" else []
        elif ref.startswith("$"):
            head, _, rest = ref.partition(".")
            if head not in scope:
                raise TemplateError(f"undefined variable {head}")
            value = scope[head]
            parts = rest.split(".") if rest else []
        else:  # inside range, as in Go, the dot is the current element
            value = scope.get(".", self.context)
            parts = ref[1:].split(".") if ref != "." else []
        for i, part in enumerate(parts):
            if value is None:
                raise TemplateError(f"nil pointer evaluating {'.'.join(parts[:i])}.{part} in {ref}")
            if isinstance(value, dict):
                value = value.get(part)
            else:
                raise TemplateError(f"cannot index {type(value).__name__} with {part!r} in {ref}")
        return value

    def term(self, tok: str, scope: dict[str, Any]) -> Any:
        if tok.startswith(".") or tok.startswith("$"):
            return self.lookup(tok, scope)
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "nil":
            return None
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if re.fullmatch(r"-?\d+\.\d*", tok):
            return float(tok)
        raise TemplateError(f"unsupported term {tok!r}")

    def command(self, words: list[str], raw: list[str], scope: dict[str, Any], piped: tuple[Any, ...]) -> Any:
        args = [w if quoted else None for w, quoted in zip(words, raw, strict=True)]
        name = words[0]

        def values(items: list[str], quoted: list[str | None]) -> list[Any]:
            return [q if q is not None else self.term(w, scope) for w, q in zip(items, quoted, strict=True)]

        if name == ".Files.Get":
            (path,) = values(words[1:], args[1:]) + list(piped)
            return self.context["Files"].get(path)
        if name in FUNCS:
            return FUNCS[name](*values(words[1:], args[1:]), *piped)
        if len(words) == 1 and not piped:
            return args[0] if args[0] is not None else self.term(name, scope)
        raise TemplateError(f"unsupported function {name!r}")

    def pipeline(self, expr: str, scope: dict[str, Any]) -> Any:
        value: tuple[Any, ...] = ()
        for cmd in _split_pipes(expr):
            lexer = shlex.shlex(cmd, posix=False)
            lexer.whitespace_split = True
            lexer.commenters = ""
            toks = list(lexer)
            if not toks:
                raise TemplateError(f"empty command in {expr!r}")
            words = [t[1:-1] if t[:1] == '"' and t[-1:] == '"' and len(t) > 1 else t for t in toks]
            quoted = [w if t[:1] == '"' else None for w, t in zip(words, toks, strict=True)]
            if any(t.startswith("(") for t in toks):
                raise TemplateError(f"parenthesised sub-expressions are outside the subset: {expr!r}")
            value = (self.command(words, quoted, scope, value),)
        return value[0]

    def render(self, nodes: list[Node], scope: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "expr":
                out.append(_to_str(self.pipeline(node.text, scope)))
            elif node.kind == "if":
                for cond, body in node.branches:
                    if cond is None or _truthy(self.pipeline(cond, scope)):
                        out.append(self.render(body, scope))
                        break
            elif node.kind == "range":
                seq = self.pipeline(node.text, scope)
                if isinstance(seq, dict):
                    items = [(k, seq[k]) for k in sorted(seq)]
                elif isinstance(seq, list):
                    items = list(enumerate(seq))
                elif seq is None:
                    items = []
                else:
                    raise TemplateError(f"cannot range over {type(seq).__name__}")
                for key, item in items:
                    inner = dict(scope)
                    inner["."] = item
                    if len(node.var_names) == 2:
                        inner[node.var_names[0]], inner[node.var_names[1]] = key, item
                    else:
                        inner[node.var_names[0]] = item
                    out.append(self.render(node.body, inner))
        return "".join(out)


def _split_pipes(expr: str) -> list[str]:
    parts, buf, in_str = [], [], False
    for ch in expr:
        if ch == '"':
            in_str = not in_str
        if ch == "|" and not in_str:
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf).strip())
    return parts


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_chart(
    chart_dir: str | pathlib.Path,
    values: dict[str, Any] | None = None,
    release: str = "colliderflow",
    namespace: str = "colliderflow",
) -> dict[str, str]:
    """Rendered text of every template (files starting with '_' and NOTES.txt are skipped, as in Helm)."""
    chart_dir = pathlib.Path(chart_dir)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    merged = deep_merge(yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}, values or {})
    context = {
        "Values": merged,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion")},
        "Files": Files(chart_dir),
    }
    renderer = Renderer(context)
    out = {}
    for path in sorted((chart_dir / "templates").rglob("*")):
        if path.is_file() and not path.name.startswith("_") and path.name != "NOTES.txt":
            name = str(path.relative_to(chart_dir))
            try:
                out[name] = renderer.render(parse(path.read_text()), {})
            except TemplateError as exc:
                raise TemplateError(f"{name}: {exc}") from None
    return out


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a rendered chart (empty documents dropped)."""
    docs = []
    for name, text in rendered.items():
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                if not isinstance(doc, dict):
                    raise TemplateError(f"{name}: a document is not a mapping: {doc!r}")
                docs.append(doc)
    return docs
