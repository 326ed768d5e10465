"""Fault-injection fixtures: a longer toy-like local run, a reference sweep of it, warehouse snapshots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.jobs.conftest import FAST_SCORING, RUN_STEPS, SWEEP, build_sweep_run, run_sweep, sweep_env

# nine checkpoints; step1 is step0 saved again (a duplicate), the others differ
FAULT_STEPS = (*RUN_STEPS, 16, 32, 64, 128)
SCORE_COLUMNS = {
    "checkpoints": "model, step, settings_hash, status, duplicate_of, weights_sha256, error IS NOT NULL AS failed",
    "head_scores": "model, step, settings_hash, layer, head, metric, value, flag",
    "head_task_scores": "model, step, settings_hash, task, layer, head, metric, value, flag",
    "checkpoint_metrics": "model, step, settings_hash, metric, value, flag",
}


ROW_KEYS = {
    "checkpoints": 3, "head_scores": 6, "head_task_scores": 7, "checkpoint_metrics": 4,
}  # leading SCORE_COLUMNS that identify a row; the rest are its values


def record_figures(case: str, faults: int, sweeps_finished: int = 0, rows_lost: int = 0, duplicate_rows: int = 0,
                   wrong_rows: int = 0) -> None:
    """Append one case's figures to $FAULT_FIGURES (a JSON-lines file) when benchmarks/fault_injection.py runs."""
    if path := os.environ.get("FAULT_FIGURES"):
        with open(path, "a") as out:
            out.write(json.dumps({"case": case, "faults": faults, "sweeps_finished": sweeps_finished,
                                  "rows_lost": rows_lost, "duplicate_rows": duplicate_rows,
                                  "wrong_rows": wrong_rows}) + "\n")


def reference_seconds(reference: Path) -> float:
    """How long the uninterrupted sweep took (kill moments scale with it)."""
    return float(reference.with_suffix(".seconds").read_text())


def compare(warehouse: Path, reference: Path) -> dict[str, int]:
    """Rows of the reference missing from `warehouse`, rows stored more than once, rows with other values."""
    got, want = snapshot(warehouse), snapshot(reference)
    figures = {"rows_lost": 0, "duplicate_rows": 0, "wrong_rows": 0}
    for table, n_key in ROW_KEYS.items():
        keys = [row[:n_key] for row in got[table]]
        figures["duplicate_rows"] += len(keys) - len(set(keys))
        wanted = {row[:n_key]: row for row in want[table]}
        stored = {row[:n_key]: row for row in got[table]}
        figures["rows_lost"] += len(wanted.keys() - stored.keys())
        figures["wrong_rows"] += sum(row != wanted.get(key) for key, row in stored.items())
    return figures


def snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    """Every stored number and status, without run ids, timestamps or timings."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.execute(f"SELECT {c} FROM {t} ORDER BY ALL").fetchall() for t, c in SCORE_COLUMNS.items()}


def fault_args(run: Path, warehouse: Path, *extra) -> list:
    return ["--local", run, "--warehouse", warehouse, *FAST_SCORING, "--heldout", run / "heldout.txt",
            "--no-report", *extra]


def run_faulted_sweep(args: list, tmp_path: Path, timeout: float = 600, **env) -> subprocess.CompletedProcess:
    """`run_sweep` with extra environment variables (e.g. HF_HUB_OFFLINE='1')."""
    return subprocess.run([sys.executable, str(SWEEP), *map(str, args)], env={**sweep_env(tmp_path), **env},
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def extend_run(root: Path) -> Path:
    """`build_sweep_run`'s run plus later random checkpoints at FAULT_STEPS."""
    import torch
    from transformers import GPTNeoXForCausalLM

    build_sweep_run(root)
    config = GPTNeoXForCausalLM.config_class.from_pretrained(root / "step0")
    for step in FAULT_STEPS[len(RUN_STEPS):]:
        torch.manual_seed(step)
        GPTNeoXForCausalLM(config).save_pretrained(root / f"step{step}")
    return root


@pytest.fixture(scope="session")
def fault_run_template(tmp_path_factory) -> Path:
    """The run, in a folder named 'run' like every copy, so all sweeps of it store model 'local/run'."""
    return extend_run(tmp_path_factory.mktemp("fault-run") / "run")


@pytest.fixture(scope="session")
def reference_warehouse(fault_run_template, tmp_path_factory) -> Path:
    """An uninterrupted sweep of the run: what every faulted sweep must end up equal to."""
    tmp = tmp_path_factory.mktemp("reference")
    warehouse = tmp / "reference.duckdb"
    started = time.monotonic()
    result = run_sweep(fault_args(fault_run_template, warehouse), tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    warehouse.with_suffix(".seconds").write_text(f"{time.monotonic() - started:.1f}")
    statuses = [row[3] for row in snapshot(warehouse)["checkpoints"]]
    assert statuses.count("ok") == len(FAULT_STEPS) - 1 and statuses.count("duplicate") == 1
    return warehouse
