"""Case 1 of the red-team run: two local runs with the same folder name overwrote or skipped each other
(the id was `local/<folder name>` and resume compared (model, settings, step), not the weights).

Now a second folder under an id the warehouse holds for another folder is refused before anything is
written, two such runs in one command are refused, `--name` gives each its own id, and a checkpoint
retrained in place is rescored, not skipped."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from tests.faults.conftest import FAULT_STEPS, compare, fault_args, record_figures, run_faulted_sweep, snapshot
from tests.jobs.conftest import REPO, sweep_env
from warehouse.db import connect_write

CASE = "local runs sharing a folder name"


def _one_head_run(root: Path, template: Path) -> Path:
    """Another training run in a folder of the same name: one head instead of four, two checkpoints."""
    config = GPTNeoXConfig.from_pretrained(template / "step0")
    config.num_attention_heads = 1
    for step in (0, 8):
        torch.manual_seed(100 + step)
        GPTNeoXForCausalLM(config).save_pretrained(root / f"step{step}")
    for name in ("tokenizer.json", "tokenizer_config.json", "heldout.txt"):
        shutil.copy(template / name, root / name)
    return root


def _dynamics(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *map(str, args)], env=sweep_env(tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_run_under_a_folder_name_the_warehouse_holds_is_refused(fault_run_template, reference_warehouse,
                                                                         tmp_path):
    warehouse = Path(shutil.copy(reference_warehouse, tmp_path / "w.duckdb"))
    with connect_write(warehouse):  # this package's views, which a reader would otherwise bring up to date
        pass
    other = _one_head_run(tmp_path / "B" / "run", fault_run_template)
    before = _sha(warehouse)
    result = _dynamics(["sweep", *fault_args(other, warehouse)], tmp_path)
    lines = result.stderr.strip().splitlines()
    record_figures(CASE, 1, **compare(warehouse, reference_warehouse))
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "local/run" in lines[0] and str(fault_run_template) in lines[0] and "--name" in lines[0]
    assert _sha(warehouse) == before  # nothing skipped, nothing overwritten: nothing written at all


def test_two_runs_with_one_folder_name_in_one_command_are_refused(fault_run_template, tmp_path):
    other = _one_head_run(tmp_path / "B" / "run", fault_run_template)
    warehouse = tmp_path / "w.duckdb"
    result = _dynamics(["sweep", "--local", fault_run_template, "--local", other, "--warehouse", warehouse,
                        "--no-report"], tmp_path)
    lines = result.stderr.strip().splitlines()
    record_figures(CASE, 1)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "local/run for" in lines[0] and str(other) in lines[0] and "--name" in lines[0]
    assert not warehouse.exists()
    mismatched = _dynamics(["sweep", "--local", fault_run_template, "--local", other, "--name", "a"], tmp_path)
    assert mismatched.returncode == 2 and "--name is given 1 time(s) for 2 --local run(s)" in mismatched.stderr


def test_names_give_each_run_its_own_id(fault_run_template, tmp_path):
    from jobs.sweep.config import SweepConfig
    from jobs.sweep.targets import build_targets

    other = _one_head_run(tmp_path / "B" / "run", fault_run_template)
    config = SweepConfig(local=(str(fault_run_template), str(other)), names=("run-4h", "run-1h"), fv_prompts=2,
                         icl=False)
    ids = {target.model_id: target.location for target in build_targets(config)}
    record_figures(CASE, 1)
    assert ids == {"local/run-4h": str(fault_run_template), "local/run-1h": str(other)}


def test_a_checkpoint_retrained_in_place_is_rescored_not_skipped(fault_run_template, reference_warehouse, tmp_path):
    run = Path(shutil.copytree(fault_run_template, tmp_path / "run"))
    warehouse = Path(shutil.copy(reference_warehouse, tmp_path / "w.duckdb"))
    with duckdb.connect(str(warehouse)) as con:  # as if the reference sweep had read this copy
        con.execute("UPDATE runs SET config = replace(CAST(config AS VARCHAR), ?, ?)::JSON",
                    [str(fault_run_template), str(run)])
    config = GPTNeoXConfig.from_pretrained(run / "step16")
    torch.manual_seed(999)
    GPTNeoXForCausalLM(config).save_pretrained(run / "step16")  # training went on and overwrote step16

    result = run_faulted_sweep(fault_args(run, warehouse, "--actors", "1"), tmp_path)
    figures = compare(warehouse, reference_warehouse)
    reference = snapshot(reference_warehouse)  # every row but step16's (model, step, ...) must be the reference's
    wrong_elsewhere = sum(row[1] != 16 and row not in reference[table]
                          for table, rows in snapshot(warehouse).items() for row in rows)
    record_figures(CASE, 1, int(result.returncode == 0), figures["rows_lost"], figures["duplicate_rows"], wrong_elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(FAULT_STEPS)} planned, 1 scored, {len(FAULT_STEPS) - 1} skipped" in result.stdout
    assert "rescored 1 checkpoint(s) whose weight files changed since they were scored: step16" in result.stdout
    assert "local/run: " + str(run) in result.stdout  # the id, shown
    assert figures["rows_lost"] == figures["duplicate_rows"] == 0 and wrong_elsewhere == 0
    assert figures["wrong_rows"] > 0  # step16's rows are the new weights' scores
    with duckdb.connect(str(warehouse), read_only=True) as con:
        sha = con.execute("SELECT weights_sha256 FROM checkpoints WHERE step = 16").fetchone()[0]
    assert sha == hashlib.sha256((run / "step16" / "model.safetensors").read_bytes()).hexdigest()
