"""Case 5 of the red-team run: FV tasks were dropped in silence. With one oversized task file and 4 shots,
8 of the 29 tasks were scored; the warning stayed inside the Ray actor and `settings.tasks.names` still
listed all 29. JSON null or object task values became the strings "None" and "{'k': [1, 2]}".

Now a local run's prompts are measured against its context before Ray starts: the tasks left out are
named in the stored settings (`tasks.left_out`, and `tasks.names` lists those scored) and in the console;
an actor that would leave out a task nobody decided to leave out fails the checkpoint instead; and task
values that are not strings or numbers are refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dynamics.errors import InputError
from dynamics.tasks.todd import REFERENCE_FV_TASKS
from jobs.sweep.config import SweepConfig
from jobs.sweep.plan import Plan, work_items
from jobs.sweep.targets import build_targets
from jobs.sweep.worker import ScoringWorker
from jobs.sweep_checkpoints import target_lines
from tests.faults.conftest import record_figures

CASE = "FV tasks dropped silently"
OVERSIZED = REFERENCE_FV_TASKS[3]  # antonym_train


def _task_dir(root: Path, rows: dict[str, list]) -> Path:
    (root / "abstractive").mkdir(parents=True)
    for name in REFERENCE_FV_TASKS:
        default = [{"input": f"in {i}", "output": f"out {i}"} for i in range(30)]
        (root / "abstractive" / f"{name}.json").write_text(json.dumps(rows.get(name, default)))
    return root


def _config(run: Path, tasks: Path) -> SweepConfig:
    return SweepConfig(local=(str(run),), tasks_dir=str(tasks), shots=4, fv_prompts=2, induction_sequences=8,
                       icl=False)


@pytest.fixture
def oversized_tasks(tmp_path) -> Path:
    long_rows = [{"input": " ".join(["the"] * 400) + f" {i}", "output": f"out {i}"} for i in range(30)]
    return _task_dir(tmp_path / "tasks", {OVERSIZED: long_rows})


def test_tasks_whose_prompts_exceed_the_context_are_named_in_settings_and_console(fault_run_template,
                                                                                 oversized_tasks):
    [target] = build_targets(_config(fault_run_template, oversized_tasks))
    settings = target.settings()["tasks"]
    result = ScoringWorker([target], "cpu", torch_threads=1).score(work_items(target)[0], None, {})
    scored = set(result.scored.head_task_scores["task"]) if result.status == "ok" else set()
    record_figures(CASE, 1, rows_lost=len(set(REFERENCE_FV_TASKS) - scored - set(target.left_out_tasks)))
    assert target.left_out_tasks == (OVERSIZED,) and target.context_tokens == 1024
    assert settings["names"] == [name for name in REFERENCE_FV_TASKS if name != OVERSIZED]
    assert settings["left_out"] == {"function_vectors": [OVERSIZED], "evaluation": [],
                                    "reason": "prompts longer than the 1024-token context"}
    assert (f"  left out 1 FV task(s) whose prompts exceed the 1024-token context: {OVERSIZED}"
            in target_lines([target], Plan()))
    assert result.status == "ok", result.error
    assert scored == set(settings["names"]) and set(result.scored.prompts["task"]) == scored  # what was scored, said


def test_an_actor_fails_the_checkpoint_rather_than_leave_out_a_task_unsaid(fault_run_template, oversized_tasks):
    [target] = build_targets(_config(fault_run_template, oversized_tasks))
    unmeasured = replace(target, left_out_tasks=(), context_tokens=None)  # as a Hub model's target is
    result = ScoringWorker([unmeasured], "cpu", torch_threads=1).score(work_items(unmeasured)[0], None, {})
    record_figures(CASE, 1, rows_lost=int(result.status == "ok"))
    assert result.status == "failed"
    assert f"1 task(s) have prompts longer than the model's 1024-token context: {OVERSIZED} (FV)" in result.error


@pytest.mark.parametrize("value", [None, {"k": [1, 2]}, [1], True], ids=["null", "object", "list", "bool"])
def test_task_values_that_are_neither_strings_nor_numbers_are_refused(value, fault_run_template, tmp_path):
    rows = [{"input": "hot", "output": "cold"}] * 10 + [{"input": "up", "output": value}]
    tasks = _task_dir(tmp_path / "tasks", {OVERSIZED: rows})
    with pytest.raises(InputError, match=rf"{OVERSIZED}.json row 10: 'output' is .*must be a string or a number"):
        build_targets(_config(fault_run_template, tasks))
    record_figures(CASE, 1)
