"""The chart renderer itself: it must render the subset exactly as Helm does, and refuse the rest."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from tests.deploy.helm_render import Files, Renderer, TemplateError, parse, render_chart


def render(source: str, values: dict | None = None, files_root: pathlib.Path | None = None) -> str:
    context = {
        "Values": values or {},
        "Release": {"Name": "rel", "Namespace": "ns", "Service": "Helm"},
        "Chart": {"Name": "c", "Version": "0.1.0", "AppVersion": "1"},
        "Files": Files(files_root or pathlib.Path(".")),
    }
    return Renderer(context).render(parse(source), {})


def test_values_release_and_trim_markers():
    out = render(
        "a: {{ .Values.x.y }}\nb:   {{- .Release.Name }}\nc: {{ .Chart.Version -}}  \n  d", {"x": {"y": 3}}
    )
    assert out == "a: 3\nb:rel\nc: 0.1.0d"


def test_if_else_chain_and_truthiness():
    src = "{{- if .Values.a }}A{{- else if .Values.b }}B{{- else }}C{{- end }}"
    assert render(src, {"a": "x"}) == "A"
    assert render(src, {"a": "", "b": [1]}) == "B"
    assert render(src, {"a": 0, "b": {}}) == "C"
    assert render("{{ if not .Values.a }}n{{ end }}", {"a": False}) == "n"
    assert render("{{ if or .Values.a .Values.b }}y{{ end }}", {"b": 1}) == "y"
    assert render('{{ if eq .Values.a "k" }}y{{ end }}', {"a": "k"}) == "y"


def test_range_rebinds_dot_and_dollar_is_root():
    src = "{{- range $ns := .Values.list }}\n- {{ $ns }}/{{ $.Release.Name }}{{- end }}"
    assert render(src, {"list": ["a", "b"]}) == "\n- a/rel\n- b/rel"
    with pytest.raises(TemplateError, match="cannot index str"):  # as in Go: '.' is the element here
        render("{{ range $v := .Values.list }}{{ .Release.Name }}{{ end }}", {"list": ["a"]})
    src = "{{ range $k, $v := .Values.m }}{{ $k }}={{ $v }};{{ end }}"
    assert render(src, {"m": {"b": 2, "a": 1}}) == "a=1;b=2;"  # sorted keys, as Go


def test_functions():
    assert render("{{ .Values.s | quote }}", {"s": 'say "hi"'}) == '"say \\"hi\\""'
    assert render("{{ .Values.s | b64enc }}", {"s": "pw"}) == "cHc="
    assert render('{{ .Values.s | default "d" }}', {"s": ""}) == "d"
    assert render("{{ .Values.s | default .Release.Namespace }}", {}) == "ns"
    out = render("k:{{ .Values.m | toYaml | nindent 2 }}", {"m": {"b": [1], "a": "x"}})
    assert yaml.safe_load(out) == {"k": {"a": "x", "b": [1]}}
    assert render("{{ .Values.l | toJson }}", {"l": ["a", 1]}) == '["a",1]'
    with pytest.raises(TemplateError, match="need it"):
        render('{{ required "need it" .Values.missing }}')


def test_files_get(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/x.json").write_text('{"a": 1}\n')
    assert render('{{ .Files.Get "d/x.json" | indent 2 }}', files_root=tmp_path) == '  {"a": 1}\n  '
    assert render('{{ .Files.Get "d/none" }}', files_root=tmp_path) == ""
    with pytest.raises(TemplateError, match="leaves the chart"):
        render('{{ .Files.Get "../etc/passwd" }}', files_root=tmp_path)


@pytest.mark.parametrize(
    "source",
    [
        '{{ include "x" . }}',
        '{{ define "x" }}a{{ end }}',
        "{{ with .Values.a }}x{{ end }}",
        '{{ .Values.a | default (printf "%s" "b") }}',
        "{{ .Values.a | upper }}",
        "{{ if .Values.a }}x",
        "{{ end }}",
        "{{ .Values.m }}",
    ],
    ids=["include", "define", "with", "parens", "unknown-func", "unterminated", "stray-end", "map-printed"],
)
def test_outside_the_subset_raises(source):
    with pytest.raises(TemplateError):
        render(source, {"a": "v", "m": {"k": 1}})


def test_render_chart_skips_helpers_and_notes(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.1.0\n")
    (tmp_path / "values.yaml").write_text("a: 1\nb: {c: 2}\n")
    (tmp_path / "templates/cm.yaml").write_text("x: {{ .Values.a }}-{{ .Values.b.c }}-{{ .Chart.Name }}\n")
    (tmp_path / "templates/_helpers.tpl").write_text("{{ define }}")
    (tmp_path / "templates/NOTES.txt").write_text("{{ nonsense }}")
    out = render_chart(tmp_path, {"b": {"c": 5}})
    assert out == {"templates/cm.yaml": "x: 1-5-t\n"}
