"""The sweep's planning and writing logic without Ray: config from flags, targets, ablation steps,
duplicates arriving out of order, the systematic-failure stop, and repeating a stored run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
import torch

from dynamics.checkpoint_scorer import ScoredCheckpoint
from dynamics.errors import InputError
from dynamics.provenance import Provenance
from dynamics.rows import checkpoint_metric_rows, head_score_rows, head_task_score_rows
from dynamics.scorers.estimates import HeadScores
from dynamics.sources.checkpoints import LocalSource
from jobs.sweep import config as sweep_config
from jobs.sweep.config import SweepConfig
from jobs.sweep.plan import WorkItem, plan_work
from jobs.sweep.targets import ablation_steps, build_targets, spread_steps
from jobs.sweep.worker import WorkResult
from jobs.sweep.writer import ResultWriter, Summary, check_systematic_failure
from jobs.sweep_checkpoints import run_record
from tests.jobs.conftest import RUN_STEPS
from warehouse import writes


def parse(argv: list[str]) -> SweepConfig:
    parser = argparse.ArgumentParser()
    sweep_config.add_arguments(parser)
    return SweepConfig.from_args(parser.parse_args(argv))


def test_options_left_out_take_the_defaults_and_paths_are_resolved(sweep_run_template, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse([]) == SweepConfig()
    config = parse(["--local", str(sweep_run_template), "--no-fv", "--shots", "0", "--warehouse", "w.duckdb"])
    assert config.local == (str(sweep_run_template.resolve()),) and config.warehouse == str(tmp_path / "w.duckdb")
    assert (config.fv, config.shots, config.icl) == (False, 0, True)


def test_every_problem_is_reported_at_once():
    with pytest.raises(InputError, match=r"4 problems") as caught:
        SweepConfig(actors=0, icl_queries=0, fv_prompts=2, fv=False, max_retries=-1)
    message = str(caught.value)
    for part in ("--actors must be an integer of at least 1", "--icl-queries must be an integer of at least 1",
                 "--no-fv and --fv-prompts conflict", "--max-retries must be an integer of at least 0"):
        assert part in message


def test_zero_shots_mean_zero_shot_accuracy_and_cannot_score_fv(sweep_run_template):
    with pytest.raises(InputError, match="--shots 0 leaves no demonstrations"):
        SweepConfig(local=(str(sweep_run_template),), shots=0)
    [target] = build_targets(SweepConfig(local=(str(sweep_run_template),), shots=0, fv=False, icl_queries=3))
    assert target.scoring.icl.evaluation.n_shots == 0 and target.scoring.icl.evaluation.n_queries == 3
    assert target.scoring.function_vectors is None and target.scoring.icl.means_from == "evaluation_prompts"


def test_targets_from_flags(sweep_run_template):
    config = SweepConfig(local=(str(sweep_run_template),), steps="1:9", fv_prompts=3, shots=2,
                         induction_sequences=5, ablation_steps="last")
    [target] = build_targets(config)
    assert target.model_id == f"local/{sweep_run_template.name}" and target.source == "local"
    assert target.steps == (1, 2, 4, 8) and target.revisions == ("step1", "step2", "step4", "step8")
    fv = target.scoring.function_vectors
    assert (fv.n_clean, fv.n_corrupted, fv.n_shots) == (3, 3, 2)
    assert target.scoring.induction.n_sequences == 5 and target.ablation_steps == (8,)
    assert target.settings_hash == build_targets(config)[0].settings_hash  # stable across builds
    other = build_targets(SweepConfig(local=(str(sweep_run_template),), steps="1:9", fv_prompts=4, shots=2,
                                      induction_sequences=5, ablation_steps="last"))[0]
    assert other.settings_hash != target.settings_hash


def test_ablation_steps():
    steps = [0, 1, 2, 4, 8, 16, 32]
    assert ablation_steps(SweepConfig(), steps, "m") == ()
    assert ablation_steps(SweepConfig(), steps, "m", default=(16, 32)) == (16, 32)
    assert ablation_steps(SweepConfig(ablation_steps="last"), steps, "m") == (32,)
    assert ablation_steps(SweepConfig(ablation_steps="none"), steps, "m", default=(32,)) == ()
    assert ablation_steps(SweepConfig(ablation_steps="2,8"), steps, "m") == (2, 8)
    assert ablation_steps(SweepConfig(icl=False), steps, "m", default=(32,)) == ()
    assert spread_steps(steps) == (2, 4, 8, 32)  # the last and three spread evenly before it
    with pytest.raises(InputError, match="not a published checkpoint"):
        ablation_steps(SweepConfig(ablation_steps="3"), steps, "m")


def _result(target, step: int, sha: str, status: str = "ok", error: str | None = None) -> WorkResult:
    item = WorkItem(target.model_id, target.revision_of(step), step)
    if status == "failed":
        return WorkResult(item, "failed", {"revision": item.revision}, error=error)
    provenance = Provenance(target.model_id, item.revision, step, sha, "float32", "eager", target.settings())
    scores = head_score_rows(HeadScores({"induction": torch.full((2, 2), step / 10)},
                                        {"induction": torch.full((2, 2), 0.01)}), provenance)
    scored = ScoredCheckpoint(scores, head_task_score_rows({}, provenance),
                              checkpoint_metric_rows({"fewshot_f1": 0.5}, provenance), pl.DataFrame(), pl.DataFrame(),
                              "float32")
    checkpoint = {"revision": item.revision, "weights_sha256": sha, "dtype": "float32", "attn_impl": "eager"}
    return WorkResult(item, "ok", checkpoint, scored, model_info=None)


def _statuses(warehouse: Path) -> dict[int, tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {step: (status, original) for step, status, original in
                con.execute("SELECT step, status, duplicate_of FROM checkpoints").fetchall()}


def test_a_duplicate_scored_before_its_original_is_demoted(sweep_run_template, tmp_path):
    [target] = build_targets(SweepConfig(local=(str(sweep_run_template),), fv_prompts=2))
    warehouse = tmp_path / "w.duckdb"
    summary = Summary(total=4)
    writer = ResultWriter(warehouse, [target], "run-1", summary)
    writer.write(_result(target, 8, "same"))  # arrives first although step 1 has the same weights
    writer.write(_result(target, 2, "other"))
    writer.write(_result(target, 1, "same"))
    writer.write(_result(target, 4, "same"))
    assert _statuses(warehouse) == {8: ("duplicate", 1), 2: ("ok", None), 1: ("ok", None), 4: ("duplicate", 1)}
    assert (summary.counts["ok"], summary.counts["duplicate"]) == (2, 2)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT DISTINCT step FROM head_scores ORDER BY 1").fetchall() == [(1,), (2,)]
    # a new writer learns the weights already stored, so a rerun marks the duplicate without scoring it
    again = ResultWriter(warehouse, [target], "run-2", Summary())
    assert again.weights[target.model_id].original("same", 4) == 1


def test_the_sweep_stops_when_every_checkpoint_fails_the_same_way(sweep_run_template, tmp_path):
    [target] = build_targets(SweepConfig(local=(str(sweep_run_template),), fv_prompts=2))
    summary = Summary()
    writer = ResultWriter(tmp_path / "w.duckdb", [target], "run", summary)
    for step in RUN_STEPS[:2]:
        writer.write(_result(target, step, "", "failed", "ValueError: no prompt fits"))
        check_systematic_failure(summary)  # not yet: two failures
    writer.write(_result(target, RUN_STEPS[2], "", "failed", "ValueError: no prompt fits"))
    with pytest.raises(InputError, match="the first 3 checkpoints all failed with: ValueError: no prompt fits"):
        check_systematic_failure(summary)
    varied = Summary(failures=["m step0: A", "m step1: B", "m step2: A"])
    varied.counts["failed"] = 3
    check_systematic_failure(varied)  # different reasons: the checkpoints, not a setting, are at fault
    one_ok = Summary(failures=["m step0: A"] * 3)
    one_ok.counts.update(failed=3, ok=1)
    check_systematic_failure(one_ok)


def test_plan_skips_what_the_warehouse_has_unless_forced(sweep_run_template, tmp_path):
    [target] = build_targets(SweepConfig(local=(str(sweep_run_template),), fv_prompts=2))
    warehouse = tmp_path / "w.duckdb"
    sha = LocalSource(sweep_run_template).fetch("step2").weights_sha256  # done means: these settings, these weights
    ResultWriter(warehouse, [target], "run", Summary()).write(_result(target, 2, sha))
    plan = plan_work([target], warehouse, force=False)
    assert plan.skipped == 1 and [item.step for item in plan.todo] == [s for s in RUN_STEPS if s != 2]
    assert plan.changed == []
    assert len(plan_work([target], warehouse, force=True).todo) == len(RUN_STEPS)


def test_a_stored_run_is_rebuilt_exactly(sweep_run_template, tmp_path):
    config = SweepConfig(local=(str(sweep_run_template),), fv_prompts=2, shots=3, token_loss_positions=(5, 20),
                         warehouse=str(tmp_path / "w.duckdb"), actors=1)
    targets = build_targets(config)
    run_id = writes.start_run(config.warehouse, config=run_record(config, targets), code_version="test")
    assert SweepConfig.from_run(Path(config.warehouse), run_id) == config
    stored = json.loads(duckdb.connect(config.warehouse, read_only=True)
                        .execute("SELECT config FROM runs").fetchone()[0])
    assert stored["targets"][0]["settings_hash"] == targets[0].settings_hash
    args = argparse.Namespace(rerun=run_id, warehouse=Path(config.warehouse), force=True)
    assert SweepConfig.from_args(args) == SweepConfig(**{**config.__dict__, "force": True})
    with pytest.raises(InputError, match="drop --shots"):
        SweepConfig.from_args(argparse.Namespace(rerun=run_id, shots=2))
    with pytest.raises(InputError, match="no run 'nope'"):
        SweepConfig.from_run(Path(config.warehouse), "nope")
