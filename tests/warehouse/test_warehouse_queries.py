"""The analysis views and Polars helpers, checked on hand-built warehouses whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from warehouse import queries, writes

NAN = float("nan")
# model "toy": 2 layers x 4 heads. Head (1, 2) is the top induction head at steps 10 and 100 and the
# top FV head at the final step 1000; head (0, 1) is the top induction head at steps 0 and 1000.
TOY_INDUCTION = {
    0: [[0.1, 0.5, 0.0, 0.0], [0.0, 0.0, 0.2, 0.0]],
    10: [[0.1, 0.3, 0.0, 0.0], [0.0, 0.0, 0.9, 0.0]],
    100: [[0.1, 0.4, 0.0, NAN], [0.0, 0.0, 0.8, 0.0]],
    1000: [[0.1, 0.7, 0.0, 0.0], [0.0, 0.0, 0.3, 0.0]],
}
TOY_FV = {
    0: [[0.05, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.01]],
    10: [[0.06, 0.0, 0.0, 0.0], [0.0, 0.0, 0.02, 0.01]],
    100: [[0.01, 0.0, 0.0, 0.0], [0.0, 0.0, 0.02, 0.08]],
    1000: [[0.01, 0.0, 0.0, 0.0], [0.0, 0.0, 0.09, 0.03]],
}
TRAIN_LOSS = {0: 10.8, 10: 7.5, 100: 5.0, 1000: 3.2}


def _write_model(path: Path, model: str, d_head: int, induction: dict, fv: dict, head_rows, metric_rows=None,
                 losses: dict | None = None, stderr: float | None = 0.001) -> None:
    n_layers, n_heads = len(induction[next(iter(induction))]), len(induction[next(iter(induction))][0])
    writes.upsert_model(path, model, "gpt_neox", "local", n_layers=n_layers, n_heads=n_heads,
                        d_model=d_head * n_heads, d_head=d_head)
    for step in induction:
        metrics = metric_rows(model, step, "s", {"train_loss": losses[step]}) if losses else None
        writes.write_checkpoint(path, {"model": model, "step": step, "settings_hash": "s", "tokens": step * 100},
                                head_rows(model, step, "s", {"induction": induction[step], "fv": fv[step]},
                                          stderr=stderr),
                                checkpoint_metrics=metrics)


@pytest.fixture(scope="module")
def toy_warehouse(tmp_path_factory, head_rows, metric_rows) -> Path:
    """Built once: the tests below only read it."""
    warehouse_path = tmp_path_factory.mktemp("toy") / "warehouse.duckdb"
    _write_model(warehouse_path, "toy", 8, TOY_INDUCTION, TOY_FV, head_rows, metric_rows, TRAIN_LOSS)
    # "flat": its final top FV head (0, 1) was never a top induction head
    flat = {0: [[0.9, 0.1]], 5: [[0.9, 0.1]]}
    _write_model(warehouse_path, "flat", 8, flat, {0: [[0.0, 0.5]], 5: [[0.0, 0.5]]}, head_rows)
    # neither a failed nor a duplicate later step is the final step
    writes.record_failure(warehouse_path, {"model": "toy", "step": 2000, "settings_hash": "s"}, "boom")
    writes.record_duplicate(warehouse_path, {"model": "toy", "step": 3000, "settings_hash": "s"}, duplicate_of=1000)
    return warehouse_path


def _reference_step(values: list[float], top_k: int) -> list[tuple[float | None, bool]]:
    """Percentile 100·(rank−1)/(n−1) among finite values (ties share the lower rank), and top-k membership
    by descending score with ties broken by head order; a plain loop, independent of the SQL."""
    finite = [v for v in values if math.isfinite(v)]
    order = sorted((i for i, v in enumerate(values) if math.isfinite(v)), key=lambda i: -values[i])
    top = set(order[:top_k])
    out = []
    for i, v in enumerate(values):
        if not math.isfinite(v):
            out.append((None, False))
            continue
        below = sum(1 for w in finite if w < v)
        out.append((100 * below / (len(finite) - 1), i in top))
    return out


@pytest.mark.parametrize("top_fraction", [0.02, 0.25])
def test_head_trajectories_match_a_per_step_loop(toy_warehouse, top_fraction):
    frame = queries.head_trajectories(toy_warehouse, model="toy", top_fraction=top_fraction)
    assert frame.height == 4 * 8
    top_k = max(1, math.ceil(top_fraction * 8))
    assert set(frame["top_k"]) == {top_k} and set(frame["top_fraction"]) == {top_fraction}
    for step in TOY_INDUCTION:
        rows = frame.filter(frame["step"] == step).sort("layer", "head")
        assert rows["tokens"].to_list() == [step * 100] * 8
        for metric, grids in (("induction", TOY_INDUCTION), ("fv", TOY_FV)):
            expected = _reference_step([v for row in grids[step] for v in row], top_k)
            pct = rows[f"{metric}_pct"].to_list()
            for (want_pct, want_top), got_pct, got_top in zip(expected, pct, rows[f"in_{metric}_top"]):
                assert got_pct == (None if want_pct is None else pytest.approx(want_pct))
                assert got_top == want_top


def test_the_induction_then_fv_head_is_found_with_its_entry_and_exit_steps(toy_warehouse):
    frame = queries.induction_to_fv_transitions(toy_warehouse)
    assert frame.select("model", "layer", "head").rows() == [("toy", 1, 2)]
    row = frame.row(0, named=True)
    assert row["final_step"] == 1000
    assert (row["induction_entered_step"], row["induction_left_step"], row["fv_entered_step"]) == (10, 1000, 1000)
    assert (row["peak_induction_pct"], row["peak_induction_step"]) == (100.0, 10)
    # final induction scores sorted: 0,0,0,0,0,0.1,0.3,0.7 -> 0.3 has 6 heads below it, of 7
    assert row["final_induction_pct"] == pytest.approx(600 / 7)
    assert row["final_fv_pct"] == 100.0
    assert (row["induction_top_steps"], row["fv_top_steps"], row["top_k"], row["top_fraction"]) == (2, 1, 1, 0.02)


def test_a_larger_top_set_changes_the_answer(toy_warehouse):
    """With k = 2, head (1, 2) is already a top induction head at step 0 and never leaves."""
    row = queries.induction_to_fv_transitions(toy_warehouse, top_fraction=0.25, model="toy").row(0, named=True)
    assert (row["layer"], row["head"], row["top_k"]) == (1, 2, 2)
    assert (row["induction_entered_step"], row["induction_left_step"]) == (0, None)


def test_set_membership_of_every_head(toy_warehouse):
    frame = queries.head_set_membership(toy_warehouse, model="toy")
    by_head = {(r["layer"], r["head"]): r for r in frame.iter_rows(named=True)}
    assert len(by_head) == 8
    top_induction = by_head[(0, 1)]
    assert (top_induction["induction_entered_step"], top_induction["induction_left_step"]) == (0, None)
    assert top_induction["induction_then_fv"] is False
    left_fv = by_head[(1, 3)]
    assert (left_fv["fv_entered_step"], left_fv["fv_left_step"], left_fv["final_fv_top"]) == (100, 1000, False)
    first_fv = by_head[(0, 0)]
    assert (first_fv["fv_entered_step"], first_fv["fv_left_step"], first_fv["fv_top_steps"]) == (0, 100, 2)


def test_the_views_agree_with_the_helpers_and_a_flat_model_has_no_transition(toy_warehouse):
    view = queries.query(toy_warehouse, "SELECT model, layer, head FROM induction_to_fv_transitions")
    assert view.rows() == [("toy", 1, 2)]
    macro = queries.query(toy_warehouse, "SELECT count(*) AS n FROM head_trajectories(top_fraction := 0.5)")
    assert macro["n"].item() == 4 * 8 + 2 * 2


def test_a_top_ranked_fv_head_that_is_not_significant_is_no_transition(warehouse_path, head_rows):
    """Head (1, 2) is the top FV head at the final step with 0.09, but its standard error is 0.05: 1.8 standard
    errors, short of the default 3, so no transition is claimed until the rule is loosened to z = 1."""
    _write_model(warehouse_path, "toy", 8, TOY_INDUCTION, TOY_FV, head_rows, stderr=None)
    grids = {step: {m: [[0.001] * 4, [0.001] * 4] for m in ("induction", "fv")} for step in TOY_INDUCTION}
    grids[1000]["fv"][1][2] = 0.05
    for step in TOY_INDUCTION:
        writes.write_checkpoint(warehouse_path, {"model": "toy", "step": step, "settings_hash": "s", "tokens": step * 100},
                                head_rows("toy", step, "s", {"induction": TOY_INDUCTION[step], "fv": TOY_FV[step]},
                                          stderr=grids[step]))
    assert queries.induction_to_fv_transitions(warehouse_path).is_empty()
    membership = queries.head_set_membership(warehouse_path).filter((pl.col("layer") == 1) & (pl.col("head") == 2))
    assert membership.select("final_fv_top", "final_fv_head", "induction_head_before_final").row(0) == (True, False, True)
    assert queries.induction_to_fv_transitions(warehouse_path, z=1).select("layer", "head").rows() == [(1, 2)]
    # significant but below the floor: no FV head either
    assert queries.induction_to_fv_transitions(warehouse_path, z=1, fv_floor=0.1).is_empty()
    # scores without a standard error are never significant, unless significance is switched off (z = 0)
    _write_model(warehouse_path, "bare", 8, TOY_INDUCTION, TOY_FV, head_rows, stderr=None)
    assert queries.induction_to_fv_transitions(warehouse_path, "bare").is_empty()
    assert queries.induction_to_fv_transitions(warehouse_path, "bare", z=0).select("layer", "head").rows() == [(1, 2)]


def test_mechanism_emergence_names_the_first_step_of_each_kind(toy_warehouse):
    frame = queries.mechanism_emergence(toy_warehouse, "toy")
    # induction head: (0, 1) at step 0 scores 0.5 ≥ 0.25; FV head: (0, 0) at step 0 is top with 0.05
    assert frame.select("induction_step", "fv_step", "emergence_order").row(0) == (0, 0, "same step")
    later = queries.mechanism_emergence(toy_warehouse, "toy", fv_floor=0.07)
    assert later.select("induction_step", "fv_step", "emergence_order").row(0) == (0, 100, "induction first")
    assert queries.mechanism_emergence(toy_warehouse, "toy", fv_floor=0.5)["fv_step"].to_list() == [None]


def test_top_k_rounds_the_way_the_paper_counts(warehouse_path, head_rows):
    """ceil(0.02 · 150) is 3; a naive float ceil gives 4 (0.02 · 150 = 3.0000000000000004)."""
    grid = [[float(layer * 15 + head) for head in range(15)] for layer in range(10)]
    _write_model(warehouse_path, "wide", 4, {1: grid}, {1: grid}, head_rows)
    frame = queries.head_trajectories(warehouse_path)
    assert set(frame["top_k"]) == {3}
    assert frame.filter("in_induction_top").sort("induction")["induction"].to_list() == [147.0, 148.0, 149.0]


def _average_ranks(values: list[float]) -> np.ndarray:
    ordered = sorted(values)
    return np.array([ordered.index(v) + (ordered.count(v) - 1) / 2 + 1 for v in values])


def test_head_dimensionality_and_its_correlations_match_numpy(warehouse_path, head_rows):
    rng = np.random.default_rng(0)
    shapes = {"a": (16, 2, 8), "b": (32, 2, 4), "c": (64, 3, 4), "d": (128, 2, 2), "e": (64, 2, 2)}
    finals = {}
    for model, (d_head, n_layers, n_heads) in shapes.items():
        induction, fv = rng.random((n_layers, n_heads)), rng.random((n_layers, n_heads)) / 10
        early = {"induction": [[9.0] * n_heads] * n_layers, "fv": [[9.0] * n_heads] * n_layers}  # not final
        _write_model(warehouse_path, model, d_head, {1: early["induction"], 50: induction.tolist()},
                     {1: early["fv"], 50: fv.tolist()}, head_rows)
        finals[model] = {"induction": induction.ravel(), "fv": fv.ravel()}

    top_fraction = 0.25
    frame = queries.head_dimensionality(warehouse_path, top_fraction=top_fraction)
    assert frame["model"].to_list() == ["a", "b", "c", "e", "d"]  # ordered by d_head, then model
    expected = {}
    for row in frame.iter_rows(named=True):
        d_head, n_layers, n_heads = shapes[row["model"]]
        assert (row["d_head"], row["n_heads"], row["n_layers"], row["final_step"]) == (d_head, n_heads, n_layers, 50)
        for metric, scores in finals[row["model"]].items():
            k = max(1, math.ceil(top_fraction * scores.size))
            stats = {"max": scores.max(), "top_mean": np.sort(scores)[::-1][:k].mean(), "mean": scores.mean()}
            for statistic, value in stats.items():
                assert row[f"{metric}_{statistic}"] == pytest.approx(value)
                expected.setdefault((metric, statistic), []).append((d_head, value))

    correlations = queries.head_dimensionality_correlations(warehouse_path, top_fraction=top_fraction)
    assert correlations.height == 6
    for row in correlations.iter_rows(named=True):
        points = expected[(row["metric"], row["statistic"])]
        x, y = [float(p[0]) for p in points], [float(p[1]) for p in points]
        assert row["n_models"] == 5
        assert row["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
        assert row["spearman"] == pytest.approx(np.corrcoef(_average_ranks(x), _average_ranks(y))[0, 1])


def test_correlations_are_null_with_fewer_than_three_models(toy_warehouse):
    correlations = queries.head_dimensionality_correlations(toy_warehouse)
    assert set(correlations["n_models"]) == {2}
    assert correlations["pearson"].null_count() == correlations["spearman"].null_count() == correlations.height


def test_phase_change_final_step_and_head_map(toy_warehouse):
    frame = queries.phase_change(toy_warehouse, model="toy")
    losses = frame.filter(frame["metric"] == "train_loss")
    assert dict(zip(losses["step"], losses["value"])) == TRAIN_LOSS
    peaks = frame.filter(frame["metric"] == "max_induction")
    assert dict(zip(peaks["step"], peaks["value"])) == {
        step: max(v for row in grid for v in row if math.isfinite(v)) for step, grid in TOY_INDUCTION.items()}
    assert set(peaks["tokens"]) == {step * 100 for step in TOY_INDUCTION}

    assert queries.final_step(toy_warehouse, "toy") == 1000
    assert queries.final_step(toy_warehouse, "flat", settings_hash="s") == 5
    with pytest.raises(ValueError, match=r"model 'nope' has no scored checkpoint .* scored models: \['flat', 'toy'\]"):
        queries.final_step(toy_warehouse, "nope")

    heat = queries.head_map(toy_warehouse, "toy", "induction")
    assert heat.height == 4 * 8
    hole = heat.filter((heat["step"] == 100) & (heat["layer"] == 0) & (heat["head"] == 3))
    assert hole.select("value", "flag").row(0) == (None, "non_finite")
    with pytest.raises(ValueError, match=r"no 'copying' scores .* its metrics are \['fv', 'induction'\]"):
        queries.head_map(toy_warehouse, "toy", "copying")


def test_query_binds_parameters_and_reports_bad_sql_in_one_line(toy_warehouse):
    frame = queries.query(toy_warehouse, "SELECT step FROM checkpoints WHERE model = ? AND status = ? ORDER BY step",
                          ["toy", "ok"])
    assert frame["step"].to_list() == [0, 10, 100, 1000]
    with pytest.raises(ValueError, match="Parser Error: syntax error at or near \"SELEC\"") as info:
        queries.query(toy_warehouse, "SELEC 1")
    assert "\n" not in str(info.value) and str(toy_warehouse) in str(info.value)
    with pytest.raises(ValueError, match="Table with name nope does not exist"):
        queries.query(toy_warehouse, "SELECT * FROM nope")
    with pytest.raises(ValueError, match="read-only"):
        queries.query(toy_warehouse, "DELETE FROM head_scores")
    with pytest.raises(ValueError, match="top_fraction must be in"):
        queries.head_trajectories(toy_warehouse, top_fraction=0)
