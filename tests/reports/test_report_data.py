"""What the report reads (warehouse.queries over the analysis views, current setups) on a real DuckDB file,
checked against numpy on the generated dynamics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.reports.synthetic_warehouse import (
    SETTINGS_HASH,
    SyntheticModel,
    build_warehouse,
)
from warehouse import queries
from warehouse.db import connect_write


def _model(models: list[SyntheticModel], name: str) -> SyntheticModel:
    return next(m for m in models if m.name == name)


def _top(values: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The k highest heads of a (layer, head) array, ties broken by layer then head."""
    L, H = values.shape
    order = sorted((-values[l, h], l, h) for l in range(L) for h in range(H))
    return {(l, h) for _, l, h in order[:k]}


def _heads(frame: pl.DataFrame, flag: str) -> set[tuple[int, int]]:
    return set(frame.filter(pl.col(flag)).select("layer", "head").rows())


def _final(path: Path, model: str, **thresholds) -> pl.DataFrame:
    """Every head of the model's current setup at its final step."""
    frame = queries.head_trajectories(path, model, current=True, **thresholds)
    return frame.filter(pl.col("step") == frame["step"].max())


def test_scored_models_picks_latest_settings_and_ok_steps(toy_warehouse, toy_models):
    path, _ = toy_warehouse
    models = queries.scored_models(path)
    assert models["model"].to_list() == [m.name for m in toy_models]
    row = models.row(0, named=True)
    d16 = _model(toy_models, "toy-d16")
    assert row["settings_hash"] == SETTINGS_HASH and row["n_settings"] == 2
    assert row["n_steps"] == len(d16.steps)  # the failed checkpoint is not counted ...
    assert row["steps"] == list(d16.steps) and row["failed_steps"] == [d16.failed_step]  # ... but listed
    assert row["duplicate_steps"] == []
    assert (row["n_layers"], row["n_heads"], row["d_head"]) == (2, 4, 16)


def test_stale_settings_hash_is_not_read(toy_warehouse):
    path, dynamics = toy_warehouse
    final = _final(path, "toy-d16")
    np.testing.assert_allclose(final.sort("layer", "head")["induction"].to_numpy(),
                               dynamics["toy-d16"].head["induction"][-1].ravel())
    assert final["induction"].max() < 0.99  # the stale setup scores every head 0.99


def test_phase_change_curves_max_induction_matches_numpy(toy_warehouse, toy_models):
    path, dynamics = toy_warehouse
    curves = queries.phase_change(path, "toy-d32", current=True)
    max_induction = curves.filter(pl.col("metric") == "max_induction").sort("step")
    expected = dynamics["toy-d32"].head["induction"].max(axis=(1, 2))
    np.testing.assert_allclose(max_induction["value"].to_numpy(), expected)
    icl = curves.filter(pl.col("metric") == "icl_token_loss").sort("step")["value"].to_numpy()
    np.testing.assert_allclose(icl, dynamics["toy-d32"].checkpoint["icl_token_loss"])
    metrics = {"max_induction", "max_fv", "train_loss", "icl_token_loss", "loss_early", "loss_late"}
    assert set(curves["metric"].unique()) == metrics


def test_head_map_scores_returns_requested_steps_only(toy_warehouse, toy_models):
    path, dynamics = toy_warehouse
    model = _model(toy_models, "toy-d64")
    scores = queries.head_trajectories(path, model.name, current=True).filter(pl.col("step").is_in([0, 256, 4000]))
    assert sorted(scores["step"].unique().to_list()) == [0, 256, 4000]
    assert scores.height == 3 * model.n_layers * model.n_heads
    at_256 = scores.filter(pl.col("step") == 256).sort("layer", "head")
    index = model.steps.index(256)
    np.testing.assert_allclose(at_256["fv"].to_numpy(), dynamics[model.name].head["fv"][index].ravel())


def test_final_top_sets_match_numpy_ranking(toy_warehouse, toy_models):
    path, dynamics = toy_warehouse
    for model in toy_models:
        final = _final(path, model.name)
        assert _heads(final, "in_induction_top") == _top(dynamics[model.name].head["induction"][-1], model.top_k)
        assert _heads(final, "in_fv_top") == _top(dynamics[model.name].head["fv"][-1], model.top_k)
        assert final["top_k"].unique().to_list() == [model.top_k]


def test_top_head_trajectories_flag_the_transition_head(toy_warehouse, toy_models):
    path, dynamics = toy_warehouse
    for model in toy_models:
        trajectories = queries.final_top_head_trajectories(path, model.name, current=True, induction_floor=0.25)
        final_induction = dynamics[model.name].head["induction"][-1]
        final_fv = dynamics[model.name].head["fv"][-1]
        expected_heads = _top(final_induction, model.top_k) | _top(final_fv, model.top_k)
        got = set(zip(trajectories["layer"].to_list(), trajectories["head"].to_list()))
        assert got == expected_heads
        assert trajectories.height == len(expected_heads) * len(model.steps)
        flagged = trajectories.filter("induction_then_fv").select("layer", "head").unique().rows()
        assert flagged == [model.transition_head]


def test_transition_needs_the_induction_floor(toy_warehouse):
    """Without a score floor, noise at step 0 puts FV heads of an 8-head model in a 3-head induction top set
    (FV floor and significance off here, so that only the induction floor differs)."""
    path, _ = toy_warehouse
    rule = {"current": True, "min_top_heads": 3, "fv_floor": 0.0, "z": 0.0}
    loose = queries.final_top_head_trajectories(path, "toy-d16", induction_floor=0.0, **rule)
    strict = queries.final_top_head_trajectories(path, "toy-d16", induction_floor=0.25, **rule)
    assert loose.filter("induction_then_fv")["head"].n_unique() > strict.filter("induction_then_fv")["head"].n_unique()


def test_head_strength_matches_numpy(toy_warehouse, toy_models):
    path, dynamics = toy_warehouse
    strength = queries.head_strength(path, current=True)
    for model in toy_models:
        for metric in ("induction", "fv"):
            values = np.sort(dynamics[model.name].head[metric][-1].ravel())[::-1]
            got = strength.filter((pl.col("model") == model.name) & (pl.col("metric") == metric)).row(0, named=True)
            np.testing.assert_allclose([got["max"], got["top_mean"], got["mean"]],
                                       [values[0], values[: model.top_k].mean(), values.mean()])
    dimensionality = queries.head_dimensionality(path)
    assert dimensionality.filter(pl.col("model") == "toy-d64")["d_head"].to_list() == [64]


def test_ablation_curves_average_tasks_and_extend_the_exclusion_curve(toy_warehouse):
    path, _ = toy_warehouse
    curves = queries.ablation_curves(path, "toy-d16")
    fv = curves.filter((pl.col("ranking") == "fv") & ~pl.col("exclusion")).sort("fraction")
    # tasks score 0.6 and 0.8 minus 2 × fraction (synthetic_warehouse._ablations_frame)
    np.testing.assert_allclose(fv["value"].to_numpy(), np.maximum(0, 0.7 - 2.0 * fv["fraction"].to_numpy()))
    assert fv["n_tasks"].unique().to_list() == [2]
    with_exclusion = curves.filter(pl.col("exclusion")).sort("fraction")
    assert with_exclusion["fraction"].min() == 0.0  # the clean run starts the with-exclusion curve too
    assert curves.filter(pl.col("exclusion") & (pl.col("fraction") == 0)).height == 3
    assert queries.ablation_curves(path, "toy-d32").is_empty()
    assert fv["n_ablated"].to_list() == [max(1, int(f * 8)) if f else 0 for f in fv["fraction"].to_list()]


def test_ablation_head_counts_become_fractions(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    model = SyntheticModel("m", 2, 4, 16, (0, 10), onset_step=5, ablations=True)
    build_warehouse(path, [model])
    with connect_write(path) as con:
        con.execute("INSERT INTO ablations (model, step, settings_hash, ranking, fraction, exclusion, method, task, "
                    "metric, value) VALUES ('m', 10, ?, 'fv', 2, false, 'mean', 'antonym', 'f1', 0.5)", [SETTINGS_HASH])
    curves = queries.ablation_curves(path, "m")
    assert 2 / 8 in curves.filter(pl.col("ranking") == "fv")["fraction"].to_list()


def test_metric_inventory_lists_what_each_model_has(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    build_warehouse(path, [SyntheticModel("bare", 2, 2, 8, (0, 1, 2), onset_step=1, head_metrics=("induction",),
                                          checkpoint_metrics=("train_loss",))])
    inventory = queries.metric_inventory(path)
    assert set(inventory.select("source", "metric").rows()) == {("head_scores", "induction"),
                                                                ("checkpoint_metrics", "train_loss")}


def test_bad_top_fraction_is_refused(toy_warehouse):
    with pytest.raises(ValueError, match="top_fraction must be in"):
        queries.head_trajectories(toy_warehouse[0], "toy-d16", top_fraction=0)
