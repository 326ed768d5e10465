"""The GPU suite's arithmetic and stage handling, with known answers: the FV work count against what the
fast path really runs, the sweep figures from warehouse rows, pytest's summary, stage failures and limits."""

from __future__ import annotations

import math
import time

import pytest
import torch

from benchmarks.fv_limit import count_fv_work
from benchmarks.fv_scoring import task_tokenizer
from benchmarks.gpu_suite import count_tests, cpu_smoke_profile, prepare_inputs, pytest_summary
from benchmarks.random_models import NeoxShape, build_random_model
from benchmarks.suite_model import PLAN_SHARE, tasks_that_fit
from benchmarks.suite_runner import Measured, StageRunner
from benchmarks.suite_sweep import CheckpointTiming, sweep_figures
from dynamics.scorers.function_vectors import FunctionVectorConfig, mean_head_activations, score_function_vectors
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.prompts import build_prompt_set
from dynamics.tasks.todd import REFERENCE_EVAL_TASKS, REFERENCE_FV_TASKS, evaluation_tasks


@pytest.fixture(scope="module")
def prompt_set():
    tasks = builtin_tasks()
    return build_prompt_set(tasks, task_tokenizer(tasks, 400), names=["antonym", "capitalize"], n_shots=2,
                            n_clean=3, n_corrupted=2)


def test_work_count_is_what_the_fast_path_runs(prompt_set) -> None:
    """Every token each block sees and every row the unembedding sees, counted by hooks (batch 1: no padding)."""
    model = build_random_model(NeoxShape("t", n_layers=3, n_heads=2, d_model=16, vocab_size=512), "cpu", torch.float32)
    block_tokens, unembedded_rows = [0], [0]

    def count_block(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (batch, pos, d_model)
        block_tokens[0] += hidden.shape[0] * hidden.shape[1]

    def count_unembedding(_module, args):
        unembedded_rows[0] += args[0].shape[:-1].numel()

    handles = [block.register_forward_pre_hook(count_block, with_kwargs=True) for block in model.blocks]
    handles.append(model.model.get_output_embeddings().register_forward_pre_hook(count_unembedding))
    config = FunctionVectorConfig(batch_size=1)
    score_function_vectors(model, prompt_set, mean_head_activations(model, prompt_set, config), config)
    for handle in handles:
        handle.remove()

    work = count_fv_work(prompt_set, model.n_layers, model.n_heads)
    assert block_tokens[0] / model.n_layers == work.token_forwards
    assert unembedded_rows[0] == work.unembedding_rows == 4 * (3 * 2 + 1)
    assert work.token_forwards - work.minimal_token_forwards == 4 * 2  # one block per patched row: N·H·2/2


def test_without_a_task_folder_the_builtin_tasks_take_the_reference_names(tmp_path) -> None:
    inputs = prepare_inputs(cpu_smoke_profile(), None, tmp_path)
    assert inputs.tasks_dir == tmp_path / "tasks"
    assert inputs.prompts.task_names == REFERENCE_FV_TASKS[:3]
    assert inputs.probe.shape == (20, 101)
    written = evaluation_tasks(inputs.tasks_dir)  # what the sweep reads for few-shot accuracy
    assert list(written) == list(REFERENCE_EVAL_TASKS)
    # the 30th name, the first evaluation task, holds built-in task 29 mod 19 = 10 (re-split: a subset of its rows)
    builtin = list(builtin_tasks().values())
    source = builtin[len(REFERENCE_FV_TASKS) % len(builtin)]
    task = written[REFERENCE_EVAL_TASKS[0]]
    assert set(task.train + task.valid) <= set(source.train + source.valid)
    assert not set(task.train) <= set(builtin[0].train + builtin[0].valid)


def timing(step: int, at: float, load: float, score: float) -> CheckpointTiming:
    return CheckpointTiming(step, "ok", None, load, score, at)


def test_sweep_figures_from_warehouse_rows() -> None:
    rows = [timing(2000, 100, 9, 3), timing(3000, 110, 5, 6), timing(4000, 118, 4, 5), timing(5000, 126, 4, 5)]
    figures = sweep_figures(rows, started_at_s=90, ended_at_s=127).figures
    assert figures["sweep_s_per_checkpoint"] == pytest.approx(26 / 3)
    assert figures["sweep_overlap"] == pytest.approx(26 / 29)  # steady wall ÷ Σ(load + score), first left out
    assert figures["sweep_min_154_checkpoints"] == pytest.approx((10 + 153 * 26 / 3 + 1) / 60)


def test_sweep_figures_refuse_failed_or_too_few_checkpoints() -> None:
    failed = CheckpointTiming(3000, "failed", "ValueError: corrupt", None, None, 110)
    with pytest.raises(RuntimeError, match="step 3000 is failed: ValueError: corrupt"):
        sweep_figures([timing(2000, 100, 1, 1), failed], 90, 120)
    with pytest.raises(RuntimeError, match="1 checkpoint.*at least 2"):
        sweep_figures([timing(2000, 100, 1, 1)], 90, 120)


def test_pytest_summary_and_counts() -> None:
    output = "....\nERROR tests/x.py\n=========== 2 passed, 1 skipped, 228 deselected, 1 error in 5.04s ===========\n"
    summary = pytest_summary(output)
    assert summary == "2 passed, 1 skipped, 228 deselected, 1 error in 5.04s"
    assert count_tests(summary) == {"gpu_tests_passed": 2, "gpu_tests_failed": 1, "gpu_tests_skipped": 1}
    assert count_tests(pytest_summary("1 failed, 3 errors in 1.0s")) == {
        "gpu_tests_passed": 0, "gpu_tests_failed": 4, "gpu_tests_skipped": 0}


def test_tasks_that_fit_the_time_left() -> None:
    # 2 s per task; 5 s left allows 5 s of planned work: 2 tasks, not 3
    assert tasks_that_fit([2.0, 2.0, 2.0], time.monotonic() + 5 / PLAN_SHARE) == 2
    assert tasks_that_fit([2.0, 2.0, 2.0], time.monotonic() + 3 / PLAN_SHARE) == 1
    assert tasks_that_fit([2.0, 2.0, 2.0], time.monotonic() + 100) == 3
    assert tasks_that_fit([100.0, 1.0], time.monotonic() + 1) == 1  # always at least one


def test_a_failing_or_slow_stage_reports_errors_and_the_suite_goes_on(capsys) -> None:
    runner = StageRunner(total_limit_s=60, margin_s=0)

    def broken(_deadline: float) -> Measured:
        raise ValueError("out of memory\nsecond line")

    def slow(_deadline: float) -> Measured:
        while True:
            time.sleep(0.01)

    runner.run("broken", 10, ["a", "b"], broken)
    runner.run("slow", 0.3, ["c"], slow)  # returns (a StageTimeout, below) though the stage would never end
    runner.run("fine", 10, ["d"], lambda _deadline: Measured({"d": 2.5}))
    assert runner.figures == {"a": "error: ValueError: out of memory", "b": "error: ValueError: out of memory",
                              "c": "error: StageTimeout: stopped at its 0.3 s limit", "d": 2.5}
    printed = capsys.readouterr().out
    assert "a=error: ValueError: out of memory\n" in printed and "d=2.5\n" in printed
    assert [record.error is None for record in runner.records] == [False, False, True]
    assert math.isclose(runner.records[1].limit_s, 0.3)
