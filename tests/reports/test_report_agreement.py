"""The report and the documented SQL answer each research question the same way, head for head.

The report's pages are parsed (the chart data they embed, the numbers their captions and tables state)
and compared with `dynamics sql` over the views docs/warehouse.md documents, on the same warehouse.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import polars as pl
import pytest

from jobs.cli import main


def sql(warehouse: Path, statement: str) -> pl.DataFrame:
    """`dynamics sql --format csv` as a user runs it."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["sql", "--warehouse", str(warehouse), "--format", "csv", statement]) == 0
    return pl.read_csv(io.StringIO(out.getvalue()))


def chart_data(page: Path, chart: str) -> list[dict]:
    """Rows of every dataset a chart embeds."""
    specs = json.loads(re.search(r"const CHARTS = (\{.*?\});\n", page.read_text(), re.S).group(1))
    return [row for rows in specs[f"vis-{chart}"]["datasets"].values() for row in rows]


def test_transition_heads_agree(toy_report: Path, toy_warehouse, toy_models):
    expected = sql(toy_warehouse[0], "SELECT t.model, t.layer, t.head FROM induction_to_fv_transitions t "
                                     "JOIN current_setups USING (model, settings_hash) ORDER BY ALL")
    assert expected.height >= 2  # something to agree on: every toy model has its transition head
    for model in toy_models:
        page = toy_report.parent / f"model-{model.name}.html"
        charted = {(r["layer"], r["head"]) for r in chart_data(page, "trajectories") if r["group"] == "induction → FV"}
        assert charted == set(expected.filter(pl.col("model") == model.name).select("layer", "head").rows())
        for layer, head in charted:
            assert f"L{layer}H{head} (an induction head from step" in page.read_text()


def test_head_strength_and_correlations_agree(toy_report: Path, toy_warehouse):
    page = toy_report.parent / "across-models.html"
    charted = {(r["model"], r["metric"], r["statistic"]): r["value"] for r in chart_data(page, "dimensionality")}
    documented = sql(toy_warehouse[0], "SELECT * FROM head_dimensionality")
    assert documented.height == 3
    for row in documented.iter_rows(named=True):
        for metric in ("induction", "fv"):
            for statistic in ("max", "top_mean", "mean"):
                assert charted[(row["model"], metric, statistic)] == pytest.approx(row[f"{metric}_{statistic}"])
    for row in sql(toy_warehouse[0], "SELECT * FROM head_dimensionality_correlations").iter_rows(named=True):
        if row["pearson"] is not None:
            assert f"r = {row['pearson']:+.2f}" in page.read_text()


def test_first_heads_agree(toy_report: Path, toy_warehouse):
    index = toy_report.read_text()
    documented = sql(toy_warehouse[0], "SELECT e.* FROM mechanism_emergence e JOIN current_setups USING (model, settings_hash)")
    for row in documented.iter_rows(named=True):
        cells = re.search(rf">{re.escape(row['model'])}</a>.*?</tr>", index).group(0)
        for step in (row["induction_step"], row["fv_step"]):
            assert ("none" if step is None else f"step {step}") in cells
