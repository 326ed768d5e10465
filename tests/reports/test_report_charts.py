"""Chart specs (encodings, embedded rows, stated statistics) and the report's step thinning, on small frames."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from reports import charts
from reports.report import ReportConfig, icl_text, missing_notes, overlap_text, pick_steps, thin_steps
from tests.reports.synthetic_warehouse import PYTHIA_STEPS
from warehouse import queries
from warehouse.db import connect_write


def _datasets(spec: dict) -> list[list[dict]]:
    return list(spec.get("datasets", {}).values())


def _find(spec: object, key: str) -> list:
    """Every value stored under `key` anywhere in a nested spec."""
    found = []
    if isinstance(spec, dict):
        for k, v in spec.items():
            found += [v] if k == key else []
            found += _find(v, key)
    elif isinstance(spec, list):
        for v in spec:
            found += _find(v, key)
    return found


def test_pick_steps_keeps_ends_and_spreads_in_log_space():
    picked = pick_steps(PYTHIA_STEPS, 24)
    assert picked[0] == 0 and picked[-1] == 143000
    assert 16 <= len(picked) <= 24
    assert set(picked) <= set(PYTHIA_STEPS)
    # log spacing: early steps are kept although 143 of the 154 steps are ≥ 1000
    assert {1, 4, 16, 64, 256} <= set(picked)
    gaps = np.diff(np.log1p(picked))
    assert gaps.max() < 2 * (math.log1p(143000) / 23)
    assert pick_steps([5, 1, 3], 24) == [1, 3, 5]


def test_thin_steps_respects_the_row_budget_per_model():
    frame = pl.DataFrame({"model": ["a"] * 154 * 5 + ["b"] * 10,
                          "step": [s for s in PYTHIA_STEPS for _ in range(5)] + list(range(10)),
                          "value": 0.0})
    thinned = thin_steps(frame, 400)
    assert thinned.height <= 400
    a_steps = thinned.filter(pl.col("model") == "a")["step"].unique().sort().to_list()
    assert a_steps[0] == 0 and a_steps[-1] == 143000
    assert thinned.filter(pl.col("model") == "b").height == 10  # small models keep every step
    assert thin_steps(frame, 5000).height == frame.height


def test_pick_steps_spreads_linearly_for_short_runs():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, *range(500, 4001, 250)]
    picked = pick_steps(steps, 8, log_spaced=False)
    assert picked[0] == 0 and picked[-1] == 4000 and len(picked) == 8
    assert sum(s >= 1000 for s in picked) >= 5  # the linear part, where a short run's phase changes happen


def test_icl_caption_names_the_loss_that_moves():
    def curves(early: list[float], late: list[float]) -> pl.DataFrame:
        icl = [b - a for a, b in zip(early, late)]
        return pl.DataFrame({"model": "m", "step": [0, 2000, 4000] * 3,
                             "metric": ["loss_early"] * 3 + ["loss_late"] * 3 + ["icl_token_loss"] * 3,
                             "value": early + late + icl})
    rising_early = icl_text(curves([3.57, 4.5, 5.43], [2.09, 1.8, 1.42]))
    assert "-1.48 → -4.01" in rising_early and "mostly because early-token loss rose (3.57 → 5.43)" in rising_early
    falling_late = icl_text(curves([3.0, 3.0, 3.1], [3.0, 2.0, 1.0]))
    assert "mostly because late-token loss fell (3.00 → 1.00)" in falling_late


def test_overlap_caption_warns_when_a_top_set_is_half_the_heads():
    final = pl.DataFrame({"layer": [0, 1], "head": [0, 0], "top_k": [1, 1], "in_induction_top": [True, False],
                          "in_fv_top": [True, False], "is_fv_head": [False, False]})
    text = overlap_text(final)
    assert "best 1 of 2 heads" in text and "share 1 (L0H0)" in text and "half the heads or more" in text
    assert "No head is an FV head" in text


def test_head_maps_nest_heads_and_bind_a_slider(toy_warehouse):
    path, _ = toy_warehouse
    steps = [0, 64, 4000]
    scores = queries.head_trajectories(path, "toy-d64", current=True).filter(pl.col("step").is_in(steps))
    scores = scores.select("model", "step", "layer", "head", "induction", "fv")  # 4 layers × 8 heads
    spec = charts.chart_head_maps(scores).to_dict()
    (rows,) = _datasets(spec)
    assert len(rows) == len(steps) * 4  # one row per (step, layer): far below Altair's 5000
    assert all(len(r["head"]) == len(r["induction"]) == len(r["fv"]) == 8 for r in rows)
    (param,) = spec["params"]
    assert param["bind"]["input"] == "range" and param["bind"]["max"] == len(steps) - 1
    assert param["value"] == len(steps) - 1  # opens at the final checkpoint
    assert _find(spec, "flatten") == [["head", "induction", "fv"]] * 2
    titles = [c["title"]["text"]["expr"] for c in spec["hconcat"]]
    assert all(str(steps).replace(" ", "") in t.replace(" ", "") for t in titles)
    tooltips = {t["field"] for t in _find(spec, "tooltip")[0]}
    assert {"model", "step", "layer", "head"} <= tooltips


def test_head_maps_skip_a_missing_metric():
    scores = pl.DataFrame({"model": "m", "step": [0, 0], "layer": [0, 0], "head": [0, 1],
                           "induction": [0.1, 0.5], "fv": [None, None]}, schema_overrides={"fv": pl.Float64})
    spec = charts.chart_head_maps(scores).to_dict()
    assert len(spec["hconcat"]) == 1 and spec["hconcat"][0]["encoding"]["color"]["field"] == "induction"


def test_induction_vs_fv_states_the_overlap(toy_warehouse):
    path, _ = toy_warehouse
    final = queries.head_trajectories(path, "toy-d16", current=True, min_top_heads=3)
    final = final.filter(pl.col("step") == final["step"].max())
    both = final.filter(pl.col("in_induction_top") & pl.col("in_fv_top"))
    assert f"best 3 of 8 heads by each score; they share {both.height}" in overlap_text(final)
    spec = charts.chart_induction_vs_fv(final).to_dict()
    assert len(_datasets(spec)[0]) == 8
    colour = spec["encoding"]["color"]
    assert colour["field"] == "layer" and colour["type"] == "ordinal"  # 2 layers: one distinct colour each


def test_dimensionality_chart_states_the_views_correlations():
    d_head = [16, 32, 64, 128]
    values = [0.1, 0.3, 0.2, 0.6]
    strength = pl.DataFrame({"model": list("abcd"), "d_head": d_head, "metric": "fv", "statistic": "max",
                             "value": values, "n_heads_total": 8, "final_step": 10})
    r = float(np.corrcoef(d_head, values)[0, 1])
    correlations = pl.DataFrame({"metric": ["fv"], "statistic": ["max"], "n_models": [4], "pearson": [r]})
    spec = charts.chart_head_dimensionality(strength, correlations).to_dict()
    subtitle = " ".join(spec["hconcat"][0]["title"]["subtitle"])
    assert "n = 4 models" in subtitle and f"r = {r:+.2f}" in subtitle
    undefined = correlations.with_columns(pl.lit(None, dtype=pl.Float64).alias("pearson"))
    assert "r = undefined" in " ".join(charts.correlation_text(undefined))


def test_phase_change_draws_only_present_panels():
    curves = pl.DataFrame({"model": "m", "step": [0, 1, 2], "metric": "max_induction", "value": [0.0, 0.3, 0.5]})
    emergence = pl.DataFrame({"model": ["m"], "induction_step": [1], "fv_step": [None]},
                             schema_overrides={"fv_step": pl.Int64})
    spec = charts.chart_phase_change(curves, emergence, final_step=2).to_dict()
    assert len(spec["vconcat"]) == 1
    layers = spec["vconcat"][0]["layer"]
    assert len(layers) == 2  # the curve and one rule: an induction head appeared, no FV head
    x = layers[0]["layer"][0]["encoding"]["x"]
    assert x["field"] == "step" and x["scale"].get("type") is None  # a short run: linear steps
    long_run = charts.chart_phase_change(curves.with_columns(pl.col("step") * 70_000), emergence,
                                         final_step=140_000).to_dict()
    x = long_run["vconcat"][0]["layer"][0]["layer"][0]["encoding"]["x"]
    assert x["field"] == "step_plus_one" and x["scale"]["type"] == "log"
    assert x["axis"]["values"][:3] == [1, 10, 100]  # one labelled tick per power of ten
    with pytest.raises(ValueError, match="no loss, ICL token-loss, induction or FV curves"):
        charts.chart_phase_change(curves.filter(pl.col("metric") == "other"), emergence, final_step=2)


def test_ablation_chart_encodes_ranking_and_exclusion(toy_warehouse):
    curves = queries.ablation_curves(toy_warehouse[0])
    spec = charts.chart_ablations(curves).to_dict()
    assert spec["facet"]["field"] == "model"  # two models with ablations
    lines, dots = spec["spec"]["layer"]
    encoding = lines["encoding"]
    assert encoding["color"]["field"] == "ranking" and encoding["strokeDash"]["field"] == "exclusion_label"
    # the dashes' legend comes from the lines alone: the dots (a point overlay would draw the legend) carry none
    assert lines["mark"]["type"] == "line" and "strokeDash" not in dots["encoding"]
    assert encoding["x"]["field"] == "n_ablated"  # at most 9 heads of 32: counted in heads
    assert len(_datasets(spec)[0]) == curves.height
    many = curves.with_columns(pl.col("n_ablated") * 40)
    # in shares of all heads: the heads really ablated, not the fraction asked for (too few may qualify)
    assert charts.chart_ablations(many).to_dict()["spec"]["layer"][0]["encoding"]["x"]["field"] == "ablated_fraction"


def test_ablation_curves_take_metric_and_method_from_the_step_they_show(toy_warehouse, tmp_path):
    """An older step with F1 under mean ablation must not hide a newer step that has only top-1 under zero."""
    path = Path(shutil.copy(toy_warehouse[0], tmp_path / "w.duckdb"))
    with connect_write(path) as con:
        later = con.execute("SELECT max(step) + 1 FROM ablations").fetchone()[0]
        con.execute(f"""INSERT INTO ablations BY NAME
                        SELECT * REPLACE ({later} AS step, 'top1' AS metric, 'zero' AS method, value / 2 AS value)
                        FROM ablations WHERE model = 'toy-d16'""")
    curves = queries.ablation_curves(path, "toy-d16")
    assert curves.height > 0
    assert set(curves["step"]) == {later} and set(curves["metric"]) == {"top1"} and set(curves["method"]) == {"zero"}
    assert set(curves["ablated_fraction"]) == set(curves["n_ablated"] / curves["n_heads_total"])


def test_missing_notes_name_what_is_absent():
    inventory = pl.DataFrame({"model": ["m"], "source": ["head_scores"], "metric": ["induction"], "n_steps": [3]})
    notes = " ".join(missing_notes(inventory, "m"))
    assert "No FV scores in this model: run the sweep with FV scoring" in notes
    assert "No ICL token-loss score" in notes and "No ablation results" in notes
    assert "No induction scores" not in notes


def test_report_config_lists_every_problem():
    with pytest.raises(ValueError, match="2 problem") as err:
        ReportConfig(max_curve_points=10, max_map_steps=1)
    assert "max_curve_points" in str(err.value) and "max_map_steps" in str(err.value)
