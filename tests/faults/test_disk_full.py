"""Disk full during warehouse writes, on a small tmpfs of the test's own (we run as root; mounting works
in this sandbox, so neither a loop image nor RLIMIT_FSIZE is needed): a one-line error, and the
warehouse still opens with everything written before it, and takes the failed write once space is freed."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.faults.conftest import record_figures
from tests.jobs.conftest import sweep_env
from warehouse import writes
from warehouse.db import connect_read

N_LAYERS, N_HEADS, N_TASKS = 6, 8, 40
METRICS = ("induction", "prev_token", "duplicate_token", "copying", "fv")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _frames(step: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    key = {"model": "m", "step": step, "settings_hash": "s"}
    heads = [{**key, "layer": l, "head": h, "metric": m, "value": step + l / 10 + h / 100, "flag": None}
             for m in METRICS for l in range(N_LAYERS) for h in range(N_HEADS)]
    tasks = [{**key, "task": f"task{t}", "layer": l, "head": h, "metric": "fv", "value": (step * t + l + h) / 7, "flag": None}
             for t in range(N_TASKS) for l in range(N_LAYERS) for h in range(N_HEADS)]
    schema = {"layer": pl.Int32, "head": pl.Int32, "flag": pl.Utf8}
    return pl.DataFrame(heads, schema_overrides=schema), pl.DataFrame(tasks, schema_overrides=schema)


def _write(warehouse: Path, step: int) -> None:
    heads, tasks = _frames(step)
    writes.write_checkpoint(warehouse, {"model": "m", "step": step, "settings_hash": "s", "revision": f"step{step}"},
                            heads, tasks)


def test_disk_full_mid_write_loses_only_that_write(small_disk):
    warehouse = small_disk / "w.duckdb"
    filler = small_disk / "filler"
    _write(warehouse, 0)
    free = int(subprocess.run(["df", "--output=avail", "-B1", str(small_disk)], capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    filler.write_bytes(b"\0" * max(0, free - 300_000))  # room for about one more checkpoint, not many
    written, error = [0], None
    for step in range(1, 40):
        try:
            _write(warehouse, step)
        except OSError as err:
            error = err
            break
        written.append(step)
    assert error is not None, "the disk never filled up"
    assert error.errno == errno.ENOSPC
    message = str(error)
    assert "\n" not in message and "free disk space" in message and str(warehouse) in message

    failed_step = written[-1] + 1
    with connect_read(warehouse) as con:  # still opens, on the full disk, with every finished write
        counts = dict(con.execute("SELECT step, count(*) FROM head_scores GROUP BY step").fetchall())
        task_counts = dict(con.execute("SELECT step, count(*) FROM head_task_scores GROUP BY step").fetchall())
        statuses = dict(con.execute("SELECT step, status FROM checkpoints").fetchall())
        values = con.execute("SELECT value FROM head_scores WHERE step = 0 ORDER BY metric, layer, head").fetchall()
    expected_rows = N_LAYERS * N_HEADS * (len(METRICS) + N_TASKS)
    record_figures("disk full mid-write", 1, rows_lost=sum(expected_rows - counts.get(s, 0) - task_counts.get(s, 0)
                                                           for s in written),
                   wrong_rows=counts.get(failed_step, 0) + task_counts.get(failed_step, 0))
    assert statuses == {step: "ok" for step in written}
    assert counts == {step: N_LAYERS * N_HEADS * len(METRICS) for step in written}
    assert task_counts == {step: N_LAYERS * N_HEADS * N_TASKS for step in written}
    expected = _frames(0)[0].sort("metric", "layer", "head")["value"].to_list()
    assert [v for (v,) in values] == expected

    filler.unlink()  # space freed: the failed checkpoint goes in, the earlier ones are untouched
    _write(warehouse, failed_step)
    with connect_read(warehouse) as con:
        assert con.execute("SELECT count(DISTINCT step) FROM head_scores").fetchone()[0] == len(written) + 1


def test_sweep_onto_a_full_disk_stops_with_one_line(small_disk, fault_run_template, tmp_path):
    (small_disk / "filler").write_bytes(b"\0" * (6 * 2**20))  # fills the 6 MiB tmpfs (the last bytes fail)
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "sweep", "--local", str(fault_run_template), "--warehouse",
         str(small_disk / "w.duckdb"), "--no-report"], env=sweep_env(tmp_path), cwd=tmp_path, capture_output=True,
        text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    record_figures("disk full at sweep start", 1)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and "free disk space" in lines[0]
