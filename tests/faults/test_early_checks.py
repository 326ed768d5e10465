"""Case 6 of the red-team run: checks that came too late. `--local toy-run --no-icl --fv-prompts 4` (10
shots by default) started Ray, loaded models and recorded failed checkpoints before saying no prompt fits a
128-token context; `dynamics score` had no --shots or --no-icl and printed a traceback on the project's own
toy models; --heldout problems surfaced per checkpoint, after loading it.

Now prompt lengths (from the tokenizer and config.json) and the held-out file are checked before Ray
starts, and `dynamics score` takes the sweep's scoring flags."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.errors import InputError
from jobs.sweep.config import SweepConfig
from jobs.sweep.targets import build_targets
from tests.faults.conftest import record_figures
from tests.jobs.conftest import REPO, sweep_env

CASE = "checks made too late"


@pytest.fixture(scope="module")
def toy_sized_run(fault_run_template, tmp_path_factory) -> Path:
    """Two checkpoints of a model with the toy suite's 128-token context."""
    run = tmp_path_factory.mktemp("ctx128") / "run"
    config = GPTNeoXConfig.from_pretrained(fault_run_template / "step0")
    config.max_position_embeddings = 128
    for step in (0, 4):
        torch.manual_seed(step)
        GPTNeoXForCausalLM(config).save_pretrained(run / f"step{step}")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(fault_run_template / name, run / name)
    return run


def _dynamics(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *map(str, args)], env=sweep_env(tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_prompts_longer_than_the_context_stop_the_sweep_before_ray(toy_sized_run, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    result = _dynamics(["sweep", "--local", toy_sized_run, "--no-icl", "--fv-prompts", "4", "--warehouse", warehouse,
                        "--no-report"], tmp_path)
    lines = result.stderr.strip().splitlines()
    record_figures(CASE, 1, wrong_rows=int(warehouse.exists()))
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]  # no Ray log lines: it never started
    assert "no FV task's 10-shot prompts fit the model's 128-token context" in lines[0] and "--shots" in lines[0]
    assert not warehouse.exists()


def test_score_takes_the_sweeps_scoring_flags_and_scores_a_toy_sized_model(toy_sized_run, tmp_path):
    out = tmp_path / "rows.parquet"
    result = _dynamics(["score", "--local", toy_sized_run, "--revision", "step4", "--no-icl", "--shots", "2",
                        "--fv-prompts", "2", "--induction-sequences", "8", "--out", out], tmp_path)
    too_long = _dynamics(["score", "--local", toy_sized_run, "--revision", "step4", "--no-fv",
                          "--induction-sequences", "8"], tmp_path)
    record_figures(CASE, 2, wrong_rows=int(result.returncode != 0) + int(too_long.returncode != 2))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"local/{toy_sized_run.name} step4" in result.stdout
    assert set(pl.read_parquet(out)["metric"]) == {"induction", "prev_token", "duplicate_token", "copying", "fv"}
    lines = too_long.stderr.strip().splitlines()  # 10-shot evaluation prompts cannot fit: said, not a traceback
    assert too_long.returncode == 2 and len(lines) == 1 and "--shots" in lines[0], too_long.stderr[-3000:]



def test_score_reads_trainer_folders_and_says_a_failure_in_one_line(toy_sized_run, tmp_path):
    """A Trainer checkpoint-<N> folder is scored as the sweep reads it; a corrupt checkpoint, or an --out folder that
    does not exist, is one line and exit 2 (it was a traceback, or a traceback after scoring)."""
    run = tmp_path / "trainer"
    for folder in ("checkpoint-4", "checkpoint-8"):
        shutil.copytree(toy_sized_run / "step4", run / folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(toy_sized_run / name, run / name)
    weights = run / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    flags = ["--no-icl", "--shots", "2", "--fv-prompts", "2", "--induction-sequences", "8"]
    scored = _dynamics(["score", "--local", run, "--revision", "checkpoint-4", *flags], tmp_path)
    corrupt = _dynamics(["score", "--local", run, "--revision", "checkpoint-8", *flags], tmp_path)
    out = tmp_path / "missing" / "rows.parquet"
    no_folder = _dynamics(["score", "--local", run, "--revision", "checkpoint-4", *flags, "--out", out], tmp_path)
    record_figures(CASE, 3, wrong_rows=int(scored.returncode != 0) + int(corrupt.returncode != 2)
                   + int(no_folder.returncode != 2))
    assert scored.returncode == 0 and f"local/{run.name} checkpoint-4" in scored.stdout, scored.stderr[-3000:]
    for result, named in ((corrupt, "model.safetensors"), (no_folder, str(out))):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and named in lines[0], result.stderr[-3000:]
    assert not out.parent.exists()

HELDOUT = {
    "empty.txt": b"",
    "blank.txt": b"  \n\n ",
    "short.txt": b"once upon a time",
    "random.txt": bytes(range(256)) * 64,
    "no-text-field.jsonl": b'{"body": "a story"}\n',
    "null-text.jsonl": b'{"text": null}\n',
    "random.parquet": bytes(range(256)) * 64,
    "random.safetensors": bytes(range(256)) * 64,
}


@pytest.mark.parametrize("name", HELDOUT)
def test_heldout_problems_are_found_before_ray(name, toy_sized_run, tmp_path):
    heldout = tmp_path / name
    heldout.write_bytes(HELDOUT[name])
    config = SweepConfig(local=(str(toy_sized_run),), heldout=str(heldout), shots=2, fv_prompts=2,
                         induction_sequences=8, icl=False, token_loss_positions=(10, 100))
    with pytest.raises(InputError) as caught:
        build_targets(config)
    record_figures(CASE, 1)
    assert str(heldout) in str(caught.value) and "\n" not in str(caught.value)
