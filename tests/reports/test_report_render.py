"""render_report and `dynamics report`: files written, overwrite rules, missing-data statements, offline pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.cli import main
from reports.report import render_report
from tests.reports.synthetic_warehouse import SETTINGS_HASH, SyntheticModel, build_warehouse
from warehouse.db import connect_write


def test_report_writes_index_model_pages_and_across_models_page(toy_report: Path, toy_models):
    folder = toy_report.parent
    assert toy_report.name == "index.html"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["index.html", "across-models.html", *(f"model-{m.name}.html" for m in toy_models)])
    index = toy_report.read_text()
    for model in toy_models:
        assert f'href="model-{model.name}.html"' in index
    assert "latest of 2" in index  # toy-d16 has a stale scoring setup
    assert "<th>first induction head</th><th>first FV head</th>" in index
    assert "scoring at least 0.25 (induction)" in index
    assert "1 failed (steps 5000; their errors are in checkpoints.error)" in index  # toy-d16's failed step, named


def test_pages_are_offline_and_state_the_threshold(toy_report: Path):
    page = (toy_report.parent / "model-toy-d16.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)  # the JavaScript is inlined, not fetched
    assert "vegaEmbed" in page and "cdn.jsdelivr" not in page
    assert "scoring at least 0.25 (induction) or 0.001 (FV) and more than 3 standard errors above zero" in page
    assert "the most recently scored of 2 scoring setups" in page
    assert "first induction head step" in page and "first FV head step" in page  # computed captions
    assert "No ablation results" not in page
    assert "No ablation results in this model" in (toy_report.parent / "model-toy-d32.html").read_text()


@pytest.fixture(scope="module")
def small_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small model with every metric: enough for tests of files and flags, quick to render."""
    path = tmp_path_factory.mktemp("small") / "w.duckdb"
    build_warehouse(path, [SyntheticModel("small", 2, 4, 16, (0, 1, 4, 16, 64), onset_step=4, ablations=True)])
    return path


def test_report_refuses_to_overwrite_unless_asked(small_warehouse: Path, tmp_path: Path):
    out = tmp_path / "report"
    render_report(small_warehouse, out)
    stale = out / "model-gone.html"
    stale.write_text("an old model page")
    keep = out / "notes.txt"
    keep.write_text("the user's own file")
    with pytest.raises(FileExistsError, match="already exists and is not empty; pass --overwrite"):
        render_report(small_warehouse, out)
    render_report(small_warehouse, out, overwrite=True)
    assert not stale.exists() and keep.exists()


def test_missing_metrics_warehouse_renders_and_says_what_is_missing(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    build_warehouse(path, [SyntheticModel("induction-only", 2, 4, 16, (0, 1, 2, 4, 8, 16, 32), onset_step=8,
                                          head_metrics=("induction", "prev_token"), checkpoint_metrics=("train_loss",))])
    with connect_write(path) as con:  # a model-level metric the report does not know is listed, not charted
        con.execute("INSERT INTO checkpoint_metrics (model, step, settings_hash, metric, value) "
                    "VALUES ('induction-only', 0, ?, 'some_new_metric', 1.0)", [SETTINGS_HASH])
    index = render_report(path, tmp_path / "report")
    page = (index.parent / "model-induction-only.html").read_text()
    assert "No FV scores in this model: run the sweep with FV scoring" in page
    assert "No ICL token-loss score in this model" in page
    assert "No ablation results in this model" in page
    assert 'id="vis-maps"' in page and 'id="vis-trajectories"' in page and 'id="vis-phase"' in page
    assert 'id="vis-induction-vs-fv"' not in page
    assert "No FV scores in this warehouse" in index.read_text()
    assert "some_new_metric" in index.read_text() and "some_new_metric" not in page


def test_empty_warehouse_gives_an_index_that_says_so(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    build_warehouse(path, [])
    index = render_report(path, tmp_path / "report")
    assert "No checkpoint with status &#x27;ok&#x27; in this warehouse" in index.read_text()
    assert [p.name for p in index.parent.iterdir()] == ["index.html"]


def test_cli_renders_and_reports_bad_input(small_warehouse: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--warehouse", str(small_warehouse), "--out", str(out), "--induction-floor", "0.5"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert "scoring at least 0.5 (induction)" in (out / "model-small.html").read_text()
    assert main(["report", "--warehouse", str(small_warehouse), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["report", "--warehouse", str(tmp_path / "nope.duckdb"), "--out", str(tmp_path / "r2")]) == 2
    assert "no warehouse at" in capsys.readouterr().err
    assert main(["report", "--warehouse", str(small_warehouse), "--out", str(tmp_path / "r3"),
                 "--top-fraction", "2"]) == 2
    assert "top_fraction must be in (0, 1]" in capsys.readouterr().err
