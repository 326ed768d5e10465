"""The seed views on a hand-built suite of three seeds whose answers are known, against plain numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from warehouse import queries, writes

STEPS = (0, 10, 100)
SEEDS = (1, 2, 3)


def _grids(seed: int) -> tuple[dict, dict]:
    """(induction, fv) per step as [layer][head] lists, 2 layers × 2 heads. Seeds 1 and 2: a layer-1 head is
    the induction head at step 10 and the FV head at step 100 (the transition; in seed 1 its neighbour
    follows, second in both rankings); seed 3: an induction head only at step 100 and no FV head (its best FV
    score is below the floor)."""
    rng = np.random.default_rng(seed)
    induction = {step: (0.01 + 0.02 * rng.random((2, 2))).tolist() for step in STEPS}
    fv = {step: (0.0002 * rng.random((2, 2))).tolist() for step in STEPS}
    if seed in (1, 2):
        head = seed - 1  # seed 1: L1H0, seed 2: L1H1
        induction[10][1][head] = 0.5 + 0.1 * seed
        fv[100][1][head] = 0.02 * seed
        if seed == 1:
            induction[10][1][1], fv[100][1][1] = 0.45, 0.01
    else:
        induction[100][0][0] = 0.4
    return induction, fv


@pytest.fixture(scope="module")
def suite_warehouse(tmp_path_factory, head_rows) -> Path:
    path = tmp_path_factory.mktemp("seeds") / "warehouse.duckdb"
    for seed in SEEDS:
        model = f"run-seed{seed}"
        writes.upsert_model(path, model, "gpt_neox", "local", n_layers=2, n_heads=2, d_model=16, d_head=8,
                            suite="suite-a", seed=seed)
        induction, fv = _grids(seed)
        for step in STEPS:
            writes.write_checkpoint(path, {"model": model, "step": step, "settings_hash": f"h{seed}"},
                                    head_rows(model, step, f"h{seed}", {"induction": induction[step], "fv": fv[step]},
                                              stderr=0.001))
    # a model outside any suite takes no part
    writes.upsert_model(path, "alone", "gpt_neox", "local", n_layers=2, n_heads=2, d_model=16, d_head=8)
    writes.write_checkpoint(path, {"model": "alone", "step": 0, "settings_hash": "h"},
                            head_rows("alone", 0, "h", {"induction": [[0.9, 0.9], [0.9, 0.9]], "fv": [[1, 1], [1, 1]]},
                                      stderr=0.001))
    return path


def _scores(metric: str) -> np.ndarray:
    """(seed, step, layer, head) of one metric."""
    return np.array([[_grids(seed)[metric == "fv"][step] for step in STEPS] for seed in SEEDS])


def test_head_spread_is_mean_std_min_max_over_seeds(suite_warehouse):
    frame = queries.seed_head_spread(suite_warehouse)
    assert set(frame["suite"]) == {"suite-a"} and frame.height == len(STEPS) * 4
    assert set(frame["n_seeds"]) == {3}
    for metric in ("induction", "fv"):
        scores = _scores(metric)
        for row in frame.iter_rows(named=True):
            values = scores[:, STEPS.index(row["step"]), row["layer"], row["head"]]
            assert row[f"{metric}_mean"] == pytest.approx(values.mean())
            assert row[f"{metric}_std"] == pytest.approx(values.std(ddof=1))
            assert (row[f"{metric}_min"], row[f"{metric}_max"]) == pytest.approx((values.min(), values.max()))
    at_10 = {(r["layer"], r["head"]): r["n_induction_head_seeds"] for r in frame.filter(step=10).iter_rows(named=True)}
    assert at_10 == {(0, 0): 0, (0, 1): 0, (1, 0): 1, (1, 1): 1}


def test_strongest_heads_spread_per_step(suite_warehouse):
    frame = queries.seed_strongest_heads(suite_warehouse, suite="suite-a")
    assert frame.height == 2 * len(STEPS)
    for metric in ("induction", "fv"):
        strongest = _scores(metric).max(axis=(2, 3))  # (seed, step)
        for row in frame.filter(metric=metric).iter_rows(named=True):
            values = strongest[:, STEPS.index(row["step"])]
            assert (row["n_seeds"], row["mean"], row["std"], row["min"], row["max"]) == pytest.approx(
                (3, values.mean(), values.std(ddof=1), values.min(), values.max()))
    with_head = {(r["metric"], r["step"]): r["n_seeds_with_head"] for r in frame.iter_rows(named=True)}
    assert with_head == {("induction", 0): 0, ("induction", 10): 2, ("induction", 100): 1,
                         ("fv", 0): 0, ("fv", 10): 0, ("fv", 100): 2}


def test_transitions_are_counted_per_layer_across_seeds(suite_warehouse):
    rows = {r["layer"]: r for r in queries.seed_transitions(suite_warehouse).iter_rows(named=True)}
    assert sorted(rows) == [0, 1]
    assert (rows[0]["n_seeds"], rows[0]["n_transition_seeds"], rows[0]["transition_seeds"]) == (3, 0, [])
    assert (rows[1]["n_seeds"], rows[1]["n_transition_seeds"], rows[1]["n_transition_heads"]) == (3, 2, 2)
    assert rows[1]["transition_seeds"] == [1, 2] and rows[1]["first_induction_head_step_min"] == 10
    # top sets of 2 of the 4 heads: seed 1's second layer-1 head transitions too — 2 seeds, 3 heads
    wider = queries.seed_transitions(suite_warehouse, top_fraction=0.5).filter(layer=1).row(0, named=True)
    assert (wider["n_transition_seeds"], wider["n_transition_heads"]) == (2, 3)
    # stricter thresholds come back as columns and change the answer: seed 1's FV head (0.02) is below 0.03
    strict = queries.seed_transitions(suite_warehouse, fv_floor=0.03).filter(layer=1)
    assert strict["transition_seeds"].to_list() == [[2]] and strict["fv_floor"].to_list() == [0.03]


def test_emergence_steps_per_seed_and_their_spread(suite_warehouse):
    frame = queries.seed_emergence(suite_warehouse, suite="suite-a")
    assert frame["seed"].to_list() == [1, 2, 3]
    assert frame["induction_step"].to_list() == [10, 10, 100] and frame["fv_step"].to_list() == [100, 100, None]
    row = frame.row(0, named=True)
    assert (row["n_seeds"], row["n_induction_seeds"], row["n_fv_seeds"]) == (3, 3, 2)
    assert (row["induction_step_min"], row["induction_step_max"], row["induction_step_mean"]) == (10, 100, 40)
    assert row["induction_step_std"] == pytest.approx(np.std([10, 10, 100], ddof=1))
    assert (row["fv_step_min"], row["fv_step_max"], row["fv_step_std"]) == (100, 100, 0)


def test_views_include_the_seed_analyses(suite_warehouse):
    frames = queries.views(suite_warehouse, z=2)
    for name in queries.SUITE_ANALYSES:
        assert not frames[name].is_empty() and set(frames[name]["z"]) == {2.0}, name
    assert queries.seed_emergence(suite_warehouse, suite="no-such-suite").is_empty()
