"""Chart specs (encodings, embedded rows, stated statistics) and the report's step thinning, on small frames."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from reports import charts
from reports.report import ReportConfig, induction_onsets, missing_notes, pick_steps, thin_steps
from tests.reports.synthetic_warehouse import PYTHIA_STEPS
from warehouse import report_queries


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


def test_induction_onsets_first_step_at_or_above_threshold():
    curves = pl.DataFrame({"model": ["a"] * 4 + ["b"] * 2, "step": [0, 10, 20, 30, 0, 10],
                           "metric": "max_induction", "value": [0.1, 0.25, 0.1, 0.9, 0.1, 0.2]})
    onsets = induction_onsets(curves, ["a", "b", "c"], 0.25)
    assert onsets.rows() == [("a", 10, 0.25), ("b", None, 0.25), ("c", None, 0.25)]


def test_head_maps_nest_heads_and_bind_a_slider(toy_warehouse):
    path, _ = toy_warehouse
    steps = [0, 64, 4000]
    scores = report_queries.head_map_scores(path, "toy-d64", steps)  # 4 layers × 8 heads
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
    final = report_queries.final_head_scores(path, "toy-d16")
    both = final.filter(pl.col("in_induction_top") & pl.col("in_fv_top"))
    spec = charts.chart_induction_vs_fv(final).to_dict()
    assert f"overlap {both.height} of 3" in spec["title"]["subtitle"]
    assert len(_datasets(spec)[0]) == 8
    assert spec["encoding"]["color"]["field"] == "layer"


def test_dimensionality_correlations_match_numpy():
    d_head = [16, 32, 64, 128]
    values = [0.1, 0.3, 0.2, 0.6]
    strength = pl.DataFrame({"model": list("abcd"), "d_head": d_head, "metric": "fv", "statistic": "max",
                             "value": values})
    (row,) = charts.dimensionality_correlations(strength).rows(named=True)
    assert row["n_models"] == 4
    assert row["pearson"] == pytest.approx(np.corrcoef(d_head, values)[0, 1])
    too_few = charts.dimensionality_correlations(strength.head(2))
    assert too_few["pearson"].to_list() == [None]
    spec = charts.chart_head_dimensionality(strength.with_columns(n_heads_total=8, final_step=10)).to_dict()
    subtitle = " ".join(spec["hconcat"][0]["title"]["subtitle"])
    assert "n = 4 models" in subtitle and f"r = {np.corrcoef(d_head, values)[0, 1]:+.2f}" in subtitle


def test_phase_change_draws_only_present_panels():
    curves = pl.DataFrame({"model": "m", "step": [0, 1, 2], "metric": "max_induction", "value": [0.0, 0.3, 0.5]})
    onsets = induction_onsets(curves, ["m"], 0.25)
    spec = charts.chart_phase_change(curves, onsets, 0.25).to_dict()
    assert len(spec["vconcat"]) == 1
    assert "≥ 0.25" in spec["title"]["subtitle"]
    x = spec["vconcat"][0]["layer"][0]["encoding"]["x"]
    assert x["field"] == "step_plus_one" and x["scale"]["type"] == "log"
    with pytest.raises(ValueError, match="no loss, ICL token-loss or induction curves"):
        charts.chart_phase_change(curves.filter(pl.col("metric") == "other"), onsets, 0.25)


def test_ablation_chart_encodes_ranking_and_exclusion(toy_warehouse):
    curves = report_queries.ablation_curves(toy_warehouse[0])
    spec = charts.chart_ablations(curves).to_dict()
    assert spec["facet"]["field"] == "model"  # two models with ablations
    encoding = spec["spec"]["encoding"]
    assert encoding["color"]["field"] == "ranking" and encoding["strokeDash"]["field"] == "exclusion_label"
    assert len(_datasets(spec)[0]) == curves.height


def test_missing_notes_name_what_is_absent():
    inventory = pl.DataFrame({"model": ["m"], "source": ["head_scores"], "metric": ["induction"], "n_steps": [3]})
    notes = " ".join(missing_notes(inventory, "m"))
    assert "No FV scores in this model: run the sweep with FV scoring" in notes
    assert "No ICL token-loss score" in notes and "No ablation results" in notes
    assert "No induction scores" not in notes


def test_report_config_lists_every_problem():
    with pytest.raises(ValueError, match="2 problem") as err:
        ReportConfig(induction_threshold=0, max_map_steps=1)
    assert "induction_threshold" in str(err.value) and "max_map_steps" in str(err.value)
