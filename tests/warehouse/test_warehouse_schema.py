"""The schema on a real DuckDB file: tables, views, version checks, and agreement with dynamics.rows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest
import torch

from dynamics.provenance import Provenance
from dynamics.rows import HEAD_METRICS, checkpoint_metric_rows, head_score_rows, head_task_score_rows
from dynamics.scorers.estimates import HeadScores
from warehouse import db, queries, writes

REPO = Path(__file__).resolve().parents[2]
TABLES = {"schema_version", "runs", "models", "checkpoints", "head_scores", "head_task_scores",
          "checkpoint_metrics", "prompts", "ablations"}
VIEWS = {"final_steps", "current_setups", "head_trajectories", "head_set_membership", "induction_to_fv_transitions",
         "mechanism_emergence", "head_strength", "head_dimensionality", "head_dimensionality_correlations",
         "phase_change", "metric_inventory", "ablation_curves", "final_top_head_trajectories", "scored_models",
         "suite_members", "seed_head_spread", "seed_strongest_heads", "seed_transitions", "seed_emergence"}


def _objects(path: Path) -> dict[str, str]:
    frame = queries.query(path, "SELECT table_name, table_type FROM information_schema.tables")
    return dict(frame.iter_rows())


def test_schema_applies_to_a_new_file_and_reapplies_when_the_scripts_change(warehouse_path):
    with db.connect_write(warehouse_path):
        pass
    # as if the file had been written by a package with other view definitions
    con = duckdb.connect(str(warehouse_path))
    con.execute("DROP VIEW phase_change")
    con.execute("UPDATE schema_version SET sql_sha256 = 'older'")
    con.close()
    with db.connect_write(warehouse_path):  # re-runs every statement on existing tables
        pass
    objects = _objects(warehouse_path)
    assert {name for name, kind in objects.items() if kind == "BASE TABLE"} == TABLES
    assert {name for name, kind in objects.items() if kind == "VIEW"} == VIEWS
    assert queries.query(warehouse_path, "SELECT version FROM schema_version")["version"].to_list() == [db.SCHEMA_VERSION]


def test_a_reader_upgrades_a_warehouse_written_by_the_previous_version(warehouse_path):
    """Version 1 had no standard errors: the first read adds the columns and today's views, keeping the rows."""
    with db.connect_write(warehouse_path) as con:
        con.execute("INSERT INTO head_scores (model, step, settings_hash, layer, head, metric, value) "
                    "VALUES ('m', 0, 's', 0, 0, 'induction', 0.5)")
    con = duckdb.connect(str(warehouse_path))
    con.execute("DROP VIEW final_top_head_trajectories; DROP MACRO TABLE final_top_head_trajectories")
    for table in ("head_scores", "head_task_scores"):
        con.execute(f"ALTER TABLE {table} DROP COLUMN stderr")
    con.execute("DELETE FROM schema_version; INSERT INTO schema_version (version, sql_sha256) VALUES (1, 'v1')")
    con.close()
    rows = queries.query(warehouse_path, "SELECT value, stderr FROM head_scores")
    assert rows.rows() == [(0.5, None)]
    assert queries.final_top_head_trajectories(warehouse_path).is_empty()  # the new macro is there
    assert queries.query(warehouse_path, "SELECT max(version) AS v FROM schema_version")["v"].item() == db.SCHEMA_VERSION


def test_schema_file_inserts_the_version_the_package_reads():
    text = (REPO / "warehouse" / "schema.sql").read_text()
    assert re.search(r"INSERT INTO schema_version \(version\) VALUES \((\d+)\)", text).group(1) == str(db.SCHEMA_VERSION)


def test_rows_from_dynamics_fit_the_tables(warehouse_path):
    provenance = Provenance(model="tiny", revision="step5", step=5, weights_sha256="abc", dtype="float32",
                            attn_implementation="eager", settings={"seed": 1}, code_version="t")
    scores = {metric: torch.arange(6, dtype=torch.float32).reshape(2, 3) for metric in HEAD_METRICS}
    scores["fv"][1, 2] = float("nan")
    stderr = {metric: torch.full((2, 3), 0.5) for metric in HEAD_METRICS}
    stderr["induction"][0, 0] = float("nan")  # undefined (one sample): stored as null
    heads = head_score_rows(HeadScores(scores, stderr), provenance)
    tasks = head_task_score_rows({"antonym": HeadScores({"fv": torch.ones(2, 3)}, {"fv": torch.ones(2, 3)})}, provenance)
    metrics = checkpoint_metric_rows({"icl_token_loss": 0.25, "train_loss": float("inf")}, provenance)
    checkpoint = {"model": "tiny", "step": 5, "settings_hash": provenance.settings_hash, "settings": provenance.settings}
    writes.write_checkpoint(warehouse_path, checkpoint, heads, tasks, metrics)

    for table, frame in (("head_scores", heads), ("head_task_scores", tasks), ("checkpoint_metrics", metrics)):
        columns = queries.query(warehouse_path, f"SELECT * FROM {table} LIMIT 0").columns
        assert set(frame.columns) <= set(columns), table
        assert len(queries.query(warehouse_path, f"SELECT * FROM {table}")) == len(frame)
    stored = queries.query(warehouse_path, "SELECT value, flag, revision, attn_impl FROM head_scores "
                                           "WHERE metric = 'fv' AND layer = 1 AND head = 2")
    assert stored.row(0) == (None, "non_finite", "step5", "eager")
    errors = queries.query(warehouse_path, "SELECT metric, layer, head, stderr FROM head_scores WHERE stderr IS NULL")
    assert errors.rows() == [("induction", 0, 0, None)]
    assert queries.query(warehouse_path, "SELECT value FROM checkpoint_metrics WHERE metric = 'icl_token_loss'").item() == 0.25


def _stamp_version(path: Path, version: int) -> None:
    with db.connect_write(path):
        pass
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    con.close()


def test_a_newer_schema_is_refused_by_readers_and_writers(warehouse_path):
    _stamp_version(warehouse_path, db.SCHEMA_VERSION + 1)
    with pytest.raises(ValueError, match="upgrade the training-dynamics package") as info:
        queries.query(warehouse_path, "SELECT 1")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=f"schema version {db.SCHEMA_VERSION + 1}"):
        writes.completed_checkpoints(warehouse_path, "m", "s")
    with pytest.raises(ValueError, match="upgrade"):
        writes.upsert_model(warehouse_path, "m", "gpt_neox", "local", 1, 1, 4, 4)


def test_a_file_that_is_not_duckdb_is_named(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("these are not the bytes of a database\n" * 200)
    for call in (lambda: queries.query(path, "SELECT 1"), lambda: writes.start_run(path, {}, "v")):
        with pytest.raises(ValueError, match="is not a DuckDB warehouse file") as info:
            call()
        assert str(path) in str(info.value)


def test_missing_and_misplaced_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no warehouse at"):
        queries.query(tmp_path / "absent.duckdb", "SELECT 1")
    with pytest.raises(FileNotFoundError, match="does not exist; create"):
        writes.start_run(tmp_path / "no" / "such" / "w.duckdb", {}, "v")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        writes.start_run(tmp_path / "file" / "w.duckdb", {}, "v")
    with pytest.raises(ValueError, match="is a directory"):
        writes.start_run(tmp_path, {}, "v")
    assert writes.completed_checkpoints(tmp_path / "absent.duckdb", "m", "s") == set()


_UNPRIVILEGED_WRITE = """
import sys
from warehouse import writes
for path in sys.argv[1:]:
    try:
        writes.start_run(path, {}, "v")
        print("written", path)
    except PermissionError as err:
        print("PermissionError", err)
"""


def test_read_only_file_and_unwritable_folder_raise_permission_errors():
    """Run as an unprivileged user (root ignores file modes), on a 0444 file and inside a 0555 folder."""
    as_root = os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv; cannot drop privileges to test file modes")
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        base = Path(folder)
        base.chmod(0o755)
        read_only = base / "read_only.duckdb"
        writes.start_run(read_only, {}, "v")
        read_only.chmod(0o444)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        command = [sys.executable, "-c", _UNPRIVILEGED_WRITE, str(read_only), str(locked / "w.duckdb")]
        if as_root:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        locked.chmod(0o755)
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout + result.stderr
    for line, path in zip(lines, (read_only, locked / "w.duckdb")):
        assert line.startswith("PermissionError cannot write the warehouse"), line
        assert str(path) in line
