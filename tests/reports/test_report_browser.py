"""Every report page opened in a real headless Chromium with the network cut: each chart draws, no console
errors, and a screenshot of each chart is kept under artifacts/report-screenshots/ ($DYNAMICS_ARTIFACTS)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reports.report import render_report
from tests.reports.chromium import Browser
from tests.reports.synthetic_warehouse import SyntheticModel, build_warehouse, pythia_like, toy_suite

MAX_PAGE_BYTES = 5 * 1024 * 1024

# Per chart container: its svg's size and the number of drawn data marks (Vega gives them role-mark groups).
_CHART_STATE = """Array.from(document.querySelectorAll('.vis')).map((el) => {
  const svg = el.querySelector('svg');
  const box = (svg || el).getBoundingClientRect();
  const outer = el.getBoundingClientRect();
  return {id: el.id, svg: svg !== null, width: box.width, height: box.height,
          marks: el.querySelectorAll('svg g.role-mark > *').length,
          clip: {x: outer.left + scrollX, y: outer.top + scrollY, width: Math.max(outer.width, box.width),
                 height: outer.height}};
})"""


def check_page(browser: Browser, page_path: Path, screenshot_dir: Path, prefix: str) -> dict[str, dict]:
    """Open a report page, assert that every chart drew without console errors, screenshot each chart
    (as `<prefix>--<page>--<chart>.png`).

    Returns the state of each chart container by id.
    """
    page = browser.new_page()
    page.open(page_path.resolve().as_uri())
    n_charts = page.evaluate("document.querySelectorAll('.vis').length")
    if n_charts:
        page.wait_for("document.body.dataset.chartsRendered !== undefined")
        assert page.evaluate("document.body.dataset.chartsFailed") == "0", page.errors
        assert page.evaluate("document.body.dataset.chartsRendered") == str(n_charts)
    page.browser.pump(0.2)  # collect console messages logged while drawing
    assert page.errors == [], f"{page_path.name}: {page.errors}"
    charts = {}
    for chart in page.evaluate(_CHART_STATE):
        assert chart["svg"], f"{page_path.name}#{chart['id']} has no svg"
        assert chart["width"] > 50 and chart["height"] > 50, chart
        assert chart["marks"] > 0, f"{page_path.name}#{chart['id']} drew no marks"
        page.screenshot(screenshot_dir / f"{prefix}--{page_path.stem}--{chart['id']}.png", chart["clip"])
        charts[chart["id"]] = chart
    return charts


def test_toy_report_draws_every_chart(browser, toy_report: Path, toy_models, screenshot_dir: Path):
    pages = sorted(toy_report.parent.glob("*.html"))
    assert len(pages) == 2 + len(toy_models)
    drawn = {page.name: check_page(browser, page, screenshot_dir, "toy") for page in pages}
    for model in toy_models:
        charts = drawn[f"model-{model.name}.html"]
        # one rect per head in each of the two maps (induction, FV) at the selected checkpoint
        assert charts["vis-maps"]["marks"] == 2 * model.n_layers * model.n_heads
        assert {"vis-phase", "vis-trajectories", "vis-induction-vs-fv"} <= charts.keys()
        assert ("vis-ablations" in charts) == model.ablations
        assert charts["vis-induction-vs-fv"]["marks"] == model.n_layers * model.n_heads
    assert set(drawn["across-models.html"]) == {"vis-phase", "vis-dimensionality", "vis-ablations"}
    assert drawn["index.html"] == {}
    assert len(list(screenshot_dir.glob("toy--model-toy-d16--*.png"))) == 5


def test_slider_moves_the_head_maps_through_checkpoints(browser, toy_report: Path, toy_models):
    page = browser.new_page()
    page.open((toy_report.parent / "model-toy-d64.html").resolve().as_uri())
    page.wait_for("document.body.dataset.chartsRendered !== undefined")
    titles = ("Array.from(document.querySelectorAll('#vis-maps .role-title-text')).map((t) => t.textContent)"
              ".filter((t) => t.includes(' score at step '))")
    assert page.evaluate(titles) == ["induction score at step 4000", "FV score at step 4000"]
    page.evaluate("""(() => { const s = document.querySelector('#vis-maps input[type=range]');
                           s.value = 0; s.dispatchEvent(new Event('input')); })()""")
    assert page.wait_for(f"(({titles})[0] || '').endsWith('step 0') && {titles}") == [
        "induction score at step 0", "FV score at step 0"]
    assert page.errors == []


def test_missing_metric_report_draws_in_browser(browser, tmp_path: Path, screenshot_dir: Path):
    path = tmp_path / "w.duckdb"
    build_warehouse(path, [SyntheticModel("fv-only", 2, 4, 16, (0, 1, 2, 4, 8, 16, 32), onset_step=8,
                                          head_metrics=("fv",), checkpoint_metrics=("icl_token_loss",))])
    index = render_report(path, tmp_path / "report")
    page = index.parent / "model-fv-only.html"
    assert "No induction scores in this model" in page.read_text()
    charts = check_page(browser, page, screenshot_dir, "missing")
    assert charts["vis-maps"]["marks"] == 2 * 4  # FV map only
    assert set(charts) == {"vis-phase", "vis-maps", "vis-trajectories"}
    check_page(browser, index.parent / "across-models.html", screenshot_dir, "missing")


def test_pythia_sized_warehouse_reports_quickly_with_small_pages(browser, tmp_path: Path, screenshot_dir: Path):
    """1,024 heads × 154 steps with every metric plus the toy suite; the time is printed, not asserted."""
    path = tmp_path / "w.duckdb"
    model = pythia_like()
    started = time.perf_counter()
    build_warehouse(path, [model, *toy_suite()])
    built_s = time.perf_counter() - started
    started = time.perf_counter()
    index = render_report(path, tmp_path / "report")
    render_s = time.perf_counter() - started
    sizes = {p.name: p.stat().st_size for p in index.parent.glob("*.html")}
    print(f"\npythia-6.9b-sized warehouse: built in {built_s:.1f} s, report rendered in {render_s:.1f} s "
          f"(target < 60 s); page sizes (MB): " + ", ".join(f"{n} {s / 2**20:.2f}" for n, s in sorted(sizes.items())))
    assert max(sizes.values()) <= MAX_PAGE_BYTES
    charts = check_page(browser, index.parent / "model-synthetic--pythia-6.9b.html", screenshot_dir, "pythia")
    assert charts["vis-maps"]["marks"] == 2 * 32 * 32
    assert charts["vis-induction-vs-fv"]["marks"] == 32 * 32
    check_page(browser, index.parent / "across-models.html", screenshot_dir, "pythia")


def test_page_check_catches_a_broken_chart(browser, tmp_path: Path, toy_report: Path):
    """The browser check itself can fail: a page whose spec is invalid reports a failed chart."""
    broken = tmp_path / "broken.html"
    text = (toy_report.parent / "model-toy-d16.html").read_text()
    broken.write_text(text.replace('"mark":{"type":"rect"}', '"mark":{"type":"no-such-mark"}', 1))
    with pytest.raises(AssertionError, match="chart vis-maps failed"):
        check_page(browser, broken, tmp_path, "broken")
