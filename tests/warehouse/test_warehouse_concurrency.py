"""One writer process and one reader process on the same file: DuckDB's single-writer lock in practice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warehouse import db, queries, writes

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("concurrency_worker.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
N_CHECKPOINTS = 15


def test_reader_and_writer_processes_interleave_without_errors_or_partial_checkpoints(tmp_path):
    path, stop = tmp_path / "shared.duckdb", tmp_path / "writer-done"
    reader = subprocess.Popen([sys.executable, str(WORKER), "reader", str(path), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert reader.stdout.readline().strip() == "ready"
    writer = subprocess.run([sys.executable, str(WORKER), "writer", str(path), str(N_CHECKPOINTS)],
                            capture_output=True, text=True, env=ENV, timeout=300)
    stop.touch()
    out, err = reader.communicate(timeout=300)
    assert writer.returncode == 0, writer.stderr
    assert reader.returncode == 0, err
    read = json.loads(out)
    assert read["failures"] == []
    assert read["partial"] == []
    # the reader saw the warehouse mid-sweep (some but not all checkpoints), so the two really overlapped
    assert any(0 < n < N_CHECKPOINTS for n in read["distinct_ok_counts"]), read
    assert writes.completed_checkpoints(path, "m", "s") == set(range(N_CHECKPOINTS))


_HOLD_OPEN = """
import sys, time
from warehouse import db
with db.connect_write(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold_writer(path: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_OPEN, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_reader_waits_for_a_short_write_and_gives_up_on_a_long_one(warehouse_path):
    writes.start_run(warehouse_path, {}, "v")
    holder = _hold_writer(warehouse_path, 1.0)
    started = time.monotonic()
    assert queries.query(warehouse_path, "SELECT count(*) AS n FROM runs")["n"].item() == 1
    waited_s = time.monotonic() - started
    holder.wait(timeout=60)
    assert waited_s > 0.2  # it really was blocked, then got through once the writer closed

    holder = _hold_writer(warehouse_path, 30.0)
    try:
        with pytest.raises(db.WarehouseBusyError, match="another process has held the warehouse .* for over 0.5 s"):
            queries.query(warehouse_path, "SELECT 1", lock_timeout_s=0.5)
        with pytest.raises(db.WarehouseBusyError, match="wait for it to finish"):
            writes.start_run(warehouse_path, {}, "v", lock_timeout_s=0.5)
    finally:
        holder.kill()
        holder.wait(timeout=60)
