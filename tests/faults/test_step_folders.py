"""Case 4 of the red-team run: checkpoints in --local folders vanished without a word. `step01` and
`step1` both parsed as step 1 and one was dropped by directory order; `stepX`, `step-1`, `step1.5` were
ignored; a step folder without config.json was skipped; Hugging Face Trainer's `checkpoint-N/` folders
were not recognised and the error gave no hint.

Now such folders are listed in the error (or, with --skip-unparsed, left out and listed in the console
and the run's stored config), `checkpoint-N/` folders are read, and a folder without config.json is
recorded as a failed checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from dynamics.errors import InputError
from jobs.sweep.config import SweepConfig
from jobs.sweep.plan import Plan, work_items
from jobs.sweep.targets import build_targets
from jobs.sweep.worker import ScoringWorker
from jobs.sweep.writer import ResultWriter, Summary
from jobs.sweep_checkpoints import run_record, target_lines
from tests.faults.conftest import FAULT_STEPS, record_figures

CASE = "step folders that vanished"
ODD_FOLDERS = ("stepX", "step-1", "step1.5", "step01")  # step01 and step1 both name step 1


def _config(run: Path, **fields) -> SweepConfig:
    return SweepConfig(local=(str(run),), fv_prompts=2, shots=2, induction_sequences=8, icl=False, **fields)


@pytest.fixture
def odd_run(fault_run_template, tmp_path) -> Path:
    run = Path(shutil.copytree(fault_run_template, tmp_path / "run"))
    for name in ODD_FOLDERS:
        shutil.copytree(run / "step0", run / name)  # step01 holds step 0's weights, as in the report
    return run


def test_unparsed_and_ambiguous_step_folders_are_listed_in_the_error(odd_run):
    with pytest.raises(InputError) as caught:
        build_targets(_config(odd_run))
    message = str(caught.value)
    record_figures(CASE, len(ODD_FOLDERS))
    assert "\n" not in message and "--skip-unparsed" in message
    assert "folder(s) whose names give no step: step-1, step1.5, stepX" in message
    assert "folders step01 and step1 both name step 1" in message


def test_skip_unparsed_sweeps_the_others_and_lists_what_it_left_out(odd_run):
    config = _config(odd_run, skip_unparsed=True)
    [target] = build_targets(config)
    left_out = ("step-1", "step01", "step1", "step1.5", "stepX")
    scored_or_listed = set(target.revisions) | set(target.skipped_folders)
    folders = {p.name for p in odd_run.iterdir() if p.is_dir() and not p.name.startswith(".")}  # not .dynamics/
    record_figures(CASE, len(ODD_FOLDERS), rows_lost=len(folders - scored_or_listed))
    assert folders == scored_or_listed  # every folder scored, or named as left out
    assert target.steps == tuple(s for s in FAULT_STEPS if s != 1)  # neither step01 nor step1 is guessed at
    assert target.skipped_folders == left_out
    assert run_record(config, [target])["targets"][0]["skipped_folders"] == list(left_out)
    assert (f"  left out 5 folder(s) whose names give no single step (--skip-unparsed): {', '.join(left_out)}"
            in target_lines([target], Plan()))


@pytest.fixture
def trainer_run(fault_run_template, tmp_path) -> Path:
    """Hugging Face Trainer's layout: output_dir/checkpoint-<step>/ with the tokenizer saved in each."""
    run = tmp_path / "trainer-output"
    for step in (2, 8):
        shutil.copytree(fault_run_template / f"step{step}", run / f"checkpoint-{step}")
    return run


def test_trainer_checkpoint_folders_are_read_and_scored(trainer_run):
    [target] = build_targets(_config(trainer_run))
    assert (target.steps, target.revisions) == ((2, 8), ("checkpoint-2", "checkpoint-8"))
    result = ScoringWorker([target], "cpu", torch_threads=1).score(work_items(target)[0], None, {})
    record_figures(CASE, 1, wrong_rows=int(result.status != "ok"))
    assert result.status == "ok", result.error
    assert result.item.step == 2 and result.scored.head_scores["step"].unique().to_list() == [2]


def test_the_error_for_a_folder_without_checkpoints_names_both_layouts(tmp_path):
    (tmp_path / "empty" / "logs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"step<N>/ subfolders \(save_pretrained\) or checkpoint-<N>/"):
        build_targets(_config(tmp_path / "empty"))
    record_figures(CASE, 1)


def test_a_step_folder_without_config_is_recorded_as_failed(fault_run_template, tmp_path):
    run = Path(shutil.copytree(fault_run_template, tmp_path / "run"))
    (run / "step4" / "config.json").unlink()
    [target] = build_targets(_config(run))
    assert 4 in target.steps  # not skipped in silence
    item = next(item for item in work_items(target) if item.step == 4)
    result = ScoringWorker([target], "cpu", torch_threads=1).score(item, None, {})
    warehouse = tmp_path / "w.duckdb"
    summary = Summary(total=1)
    ResultWriter(warehouse, [target], "run-1", summary).write(result)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        status, error = con.execute("SELECT status, error FROM checkpoints WHERE step = 4").fetchone()
    record_figures(CASE, 1, rows_lost=int(status != "failed"))
    assert status == "failed" and "step4 has no config.json" in error
    assert summary.counts["failed"] == 1 and "step4" in summary.lines()[1]
