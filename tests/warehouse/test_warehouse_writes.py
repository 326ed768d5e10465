"""Idempotent, atomic checkpoint writes on a real DuckDB file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from warehouse import queries, writes

REPO = Path(__file__).resolve().parents[2]
GRID = {"induction": [[0.1, 0.2], [0.3, 0.4]], "fv": [[0.01, 0.02], [0.03, 0.04]]}


def checkpoint(step: int, **extra) -> dict:
    return {"model": "m", "step": step, "settings_hash": "s", **extra}


def count(path: Path, table: str, where: str = "TRUE") -> int:
    return queries.query(path, f"SELECT count(*) AS n FROM {table} WHERE {where}")["n"].item()


def test_writing_a_checkpoint_twice_keeps_one_copy_with_the_new_values(warehouse_path, head_rows, metric_rows):
    tasks = head_rows("m", 10, "s", {"fv": GRID["fv"]}, task="antonym")
    writes.write_checkpoint(warehouse_path, checkpoint(10, run_id="r1"), head_rows("m", 10, "s", GRID), tasks,
                            metric_rows("m", 10, "s", {"icl_token_loss": 1.0}))
    doubled = {metric: [[2 * v for v in row] for row in grid] for metric, grid in GRID.items()}
    writes.write_checkpoint(warehouse_path, checkpoint(10, run_id="r2"), head_rows("m", 10, "s", doubled), tasks,
                            metric_rows("m", 10, "s", {"icl_token_loss": 2.0}))

    assert count(warehouse_path, "head_scores") == 8
    assert count(warehouse_path, "head_task_scores") == 4
    assert count(warehouse_path, "checkpoint_metrics") == 1
    assert count(warehouse_path, "checkpoints") == 1
    stored = queries.query(warehouse_path, "SELECT value, run_id FROM head_scores WHERE metric = 'induction' "
                                           "AND layer = 1 AND head = 1")
    assert stored.row(0) == (pytest.approx(0.8), "r2")  # run_id filled in from the checkpoint
    assert queries.query(warehouse_path, "SELECT value FROM checkpoint_metrics").item() == 2.0


def test_rescoring_without_task_rows_removes_the_old_ones(warehouse_path, head_rows):
    writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID),
                            head_rows("m", 1, "s", {"fv": GRID["fv"]}, task="antonym"))
    writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID))
    assert count(warehouse_path, "head_task_scores") == 0
    assert count(warehouse_path, "head_scores") == 8


def test_other_settings_and_steps_are_kept_apart(warehouse_path, head_rows):
    writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID))
    writes.write_checkpoint(warehouse_path, {"model": "m", "step": 1, "settings_hash": "t"},
                            head_rows("m", 1, "t", GRID))
    writes.write_checkpoint(warehouse_path, checkpoint(2), head_rows("m", 2, "s", GRID))
    assert count(warehouse_path, "head_scores") == 24
    assert writes.completed_checkpoints(warehouse_path, "m", "s") == {1, 2}
    assert writes.completed_checkpoints(warehouse_path, "m", "t") == {1}


def test_a_failed_write_rolls_back_and_keeps_earlier_rows(warehouse_path, head_rows):
    writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID))
    # a flag the schema's CHECK constraint rejects: the insert fails inside the transaction, after the
    # rewrite has already deleted step 1's rows
    bad_flag = head_rows("m", 1, "s", GRID).with_columns(pl.lit("suspicious").alias("flag"))
    with pytest.raises(ValueError, match="CHECK constraint failed") as info:
        writes.write_checkpoint(warehouse_path, checkpoint(1, run_id="second"), bad_flag)
    assert "\n" not in str(info.value) and str(warehouse_path) in str(info.value)
    assert count(warehouse_path, "head_scores") == 8  # the rollback restored them
    assert queries.query(warehouse_path, "SELECT status, run_id FROM checkpoints").row(0) == ("ok", None)
    with pytest.raises(ValueError, match="CHECK constraint failed"):
        writes.write_checkpoint(warehouse_path, checkpoint(2), head_rows("m", 2, "s", GRID),
                                head_rows("m", 2, "s", GRID, task="antonym").with_columns(pl.lit("x").alias("flag")))
    assert writes.completed_checkpoints(warehouse_path, "m", "s") == {1}
    assert count(warehouse_path, "head_scores", "step = 2") == 0


_WRITE_UNDER_A_FILE_SIZE_LIMIT = """
import os, resource, signal, sys
import polars as pl
from warehouse import writes
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
limit = os.path.getsize(path) + 4096
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
n = 200_000
frame = pl.DataFrame({"model": "m", "step": 2, "settings_hash": "s", "layer": [i // 64 for i in range(n)],
                      "head": [i % 64 for i in range(n)], "metric": "induction", "value": [float(i) for i in range(n)],
                      "flag": pl.Series([None] * n, dtype=pl.Utf8)})
try:
    writes.write_checkpoint(path, {"model": "m", "step": 2, "settings_hash": "s"}, frame)
    print("written")
except OSError as err:
    print("OSError", err)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_running_out_of_space_mid_write_keeps_earlier_checkpoints(warehouse_path, head_rows):
    """A file-size limit makes the disk 'full' partway through a large write."""
    writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID))
    result = subprocess.run([sys.executable, "-c", _WRITE_UNDER_A_FILE_SIZE_LIMIT, str(warehouse_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("OSError [Errno 28] could not write the warehouse"), result.stdout + result.stderr
    assert "free disk space" in result.stdout and len(result.stdout.splitlines()) == 1
    assert writes.completed_checkpoints(warehouse_path, "m", "s") == {1}
    assert count(warehouse_path, "head_scores") == 8


def test_failures_and_duplicates_are_recorded(warehouse_path, head_rows):
    writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID))
    writes.record_failure(warehouse_path, checkpoint(1), "CUDA out of memory")
    writes.record_duplicate(warehouse_path, checkpoint(3, revision="step3"), duplicate_of=2)
    rows = queries.query(warehouse_path, "SELECT step, status, error, duplicate_of FROM checkpoints ORDER BY step")
    assert rows.rows() == [(1, "failed", "CUDA out of memory", None), (3, "duplicate", None, 2)]
    assert count(warehouse_path, "head_scores") == 0  # a failed re-score leaves no stale rows
    assert writes.completed_checkpoints(warehouse_path, "m", "s") == {3}
    with pytest.raises(ValueError, match="needs the error text"):
        writes.record_failure(warehouse_path, checkpoint(1), " ")
    with pytest.raises(ValueError, match="another step"):
        writes.record_duplicate(warehouse_path, checkpoint(3), duplicate_of=3)


def test_bad_frames_are_refused_before_anything_is_written(warehouse_path, head_rows):
    with pytest.raises(ValueError, match="belong to .* but the checkpoint is"):
        writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 2, "s", GRID))
    nan_value = head_rows("m", 1, "s", GRID).with_columns(pl.lit(float("nan")).alias("value"))
    with pytest.raises(ValueError, match="8 rows whose value/flag disagree"):
        writes.write_checkpoint(warehouse_path, checkpoint(1), nan_value)
    with pytest.raises(ValueError, match=r"missing \['flag'\]"):
        writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID).drop("flag"))
    with pytest.raises(ValueError, match="unknown fields \\['stp'\\]"):
        writes.write_checkpoint(warehouse_path, {**checkpoint(1), "stp": 1}, head_rows("m", 1, "s", GRID))
    twice = head_rows("m", 1, "s", GRID, task="antonym")
    with pytest.raises(ValueError, match=r"head_task_scores has 16 rows sharing a \(task, layer, head, metric\)"):
        writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID), pl.concat([twice, twice]))
    with pytest.raises(ValueError, match="non-negative integer"):
        writes.write_checkpoint(warehouse_path, checkpoint(-1), head_rows("m", -1, "s", GRID))
    assert not warehouse_path.exists()


def test_prompts_are_stored_once_per_settings_hash(warehouse_path, head_rows):
    prompts = pl.DataFrame({"task": ["antonym"] * 2, "kind": ["clean", "corrupted"], "idx": [0, 0],
                            "prompt": ["hot: cold\nup:", "hot: up\nup:"], "target": [" down", " down"]})
    writes.write_checkpoint(warehouse_path, checkpoint(1), head_rows("m", 1, "s", GRID), prompts=prompts)
    writes.write_checkpoint(warehouse_path, checkpoint(2), head_rows("m", 2, "s", GRID), prompts=prompts)
    stored = queries.query(warehouse_path, "SELECT settings_hash, kind, prompt FROM prompts ORDER BY kind")
    assert stored.rows() == [("s", "clean", "hot: cold\nup:"), ("s", "corrupted", "hot: up\nup:")]
    with pytest.raises(ValueError, match="kind IN|CHECK constraint"):
        writes.write_checkpoint(warehouse_path, checkpoint(3), head_rows("m", 3, "s", GRID),
                                prompts=prompts.with_columns(pl.lit("shuffled").alias("kind")))


def test_runs_and_models(warehouse_path):
    run_id = writes.start_run(warehouse_path, {"models": ["m"], "steps": [1, 2]}, "0.1.0+abc", device="cpu")
    writes.finish_run(warehouse_path, run_id)
    run = queries.query(warehouse_path, "SELECT config, library_versions, finished_at FROM runs WHERE run_id = ?",
                        [run_id])
    assert json.loads(run["config"].item()) == {"models": ["m"], "steps": [1, 2]}
    assert "duckdb" in json.loads(run["library_versions"].item())
    assert run["finished_at"].item() is not None
    with pytest.raises(KeyError, match="no run 'nope'"):
        writes.finish_run(warehouse_path, "nope")
    failed = writes.start_run(warehouse_path, {}, "0.1.0+abc")
    writes.finish_run(warehouse_path, failed, "failed", "InputError: no GPUs")
    stopped = writes.start_run(warehouse_path, {}, "0.1.0+abc")
    writes.finish_run(warehouse_path, stopped, "interrupted", "interrupted (Ctrl-C or SIGTERM)")
    ended = queries.query(warehouse_path, "SELECT run_id, status, error, finished_at IS NOT NULL AS ended FROM runs")
    assert sorted(ended.rows()) == sorted([(run_id, "finished", None, True), (failed, "failed", "InputError: no GPUs", True),
                                           (stopped, "interrupted", "interrupted (Ctrl-C or SIGTERM)", True)])
    with pytest.raises(ValueError, match="a failed run needs its error text"):
        writes.finish_run(warehouse_path, failed, "failed")
    with pytest.raises(ValueError, match="'finished', 'failed' or 'interrupted'"):
        writes.finish_run(warehouse_path, failed, "crashed", "x")

    writes.upsert_model(warehouse_path, "m", "gpt_neox", "local", n_layers=2, n_heads=4, d_model=32, d_head=8)
    writes.upsert_model(warehouse_path, "m", "gpt_neox", "hub", n_layers=2, n_heads=4, d_model=32, d_head=8,
                        n_params=1234)
    assert queries.query(warehouse_path, "SELECT source, n_params FROM models").rows() == [("hub", 1234)]
    with pytest.raises(ValueError, match="'hub' or 'local'"):
        writes.upsert_model(warehouse_path, "m", "gpt_neox", "disk", 2, 4, 32, 8)
    with pytest.raises(ValueError, match="positive integer sizes \\(got d_head=0\\)"):
        writes.upsert_model(warehouse_path, "m", "gpt_neox", "hub", 2, 4, 32, 0)


def test_nothing_here_imports_torch():
    code = "import sys, warehouse.db, warehouse.writes, warehouse.queries; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
