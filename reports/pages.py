"""Self-contained HTML pages: several Vega-Lite charts per page with Vega, Vega-Lite and Vega-Embed inlined.

One copy of the JavaScript bundle (from vl-convert-python, as `chart.save(inline=True)` uses) serves
every chart on a page, so a page opens in a browser with no network. When every chart has settled the
page sets `data-charts-rendered` and `data-charts-failed` on <body>; the browser tests wait on them.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import altair as alt

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem 2rem; color: #222; max-width: 1400px; }
nav a { margin-right: 1rem; }
.notes { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 1rem; margin: 1rem 0; }
.chart { margin: 2rem 0 2.5rem; }
.chart p.caption { max-width: 60rem; margin: 0.4rem 0 0; color: #444; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: left; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""

# Embeds every chart, shows a failed chart's error in place, then marks the body for the tests.
_EMBED_SCRIPT = """
const results = Object.entries(CHARTS).map(([id, spec]) =>
  vegaEmbed("#" + id, spec, {renderer: "svg", actions: false}).catch((err) => {
    console.error("chart " + id + " failed:", err);
    document.getElementById(id).textContent = "This chart failed to render: " + err.message;
    throw err;
  }));
Promise.allSettled(results).then((settled) => {
  document.body.dataset.chartsRendered = settled.filter((s) => s.status === "fulfilled").length;
  document.body.dataset.chartsFailed = settled.filter((s) => s.status === "rejected").length;
});
"""


@dataclass(frozen=True)
class ChartSection:
    """One chart and the sentence under it saying what to look for."""

    key: str  # unique within the page; becomes the container's id
    chart: alt.TopLevelMixin
    caption: str


def javascript_bundle() -> str:
    """Vega, Vega-Lite (the version Altair targets) and Vega-Embed as one classic script (~0.9 MB)."""
    import vl_convert

    vl_version = ".".join(alt.SCHEMA_VERSION.split(".")[:2])  # "v6.4.1" → "v6.4", the form vl-convert takes
    return vl_convert.javascript_bundle(vl_version=vl_version)


def write_chart_page(path: Path, title: str, notes: list[str], sections: list[ChartSection],
                     intro_html: str, bundle: str) -> None:
    """Write one HTML page: navigation, intro, notes on missing data, then each chart with its caption."""
    specs = {f"vis-{s.key}": s.chart.to_dict() for s in sections}
    body = "\n".join(
        f'<section class="chart" id="chart-{html.escape(s.key)}"><div class="vis" id="vis-{html.escape(s.key)}"></div>'
        f'<p class="caption">{html.escape(s.caption)}</p></section>'
        for s in sections
    )
    script = f"<script>{bundle}</script>" if sections else ""
    charts = f"<script>\nconst CHARTS = {_script_json(specs)};\n{_EMBED_SCRIPT}</script>" if sections else ""
    _write_atomic(path, _page(title, f"{intro_html}\n{notes_html(notes)}\n{body}\n{charts}", head_extra=script))


def write_text_page(path: Path, title: str, body_html: str) -> None:
    """Write a page without charts (the index)."""
    _write_atomic(path, _page(title, body_html, head_extra=""))


def notes_html(notes: list[str]) -> str:
    """Notes on what a page does not show (and why) as an HTML box; empty when there are none."""
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f'<div class="notes"><strong>Not shown:</strong><ul>{items}</ul></div>'


def _page(title: str, body: str, head_extra: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{_STYLE}</style>\n{head_extra}\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _script_json(value: object) -> str:
    """JSON safe inside <script>: '</' cannot close the tag, U+2028/9 cannot end a line."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a browser never opens half a page."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
