"""kill -9 of the driver at random moments, resuming each time: the final warehouse equals an
uninterrupted sweep's — no row lost, none twice, none different. Two kills in the normal run, twenty
with -m slow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.faults.conftest import compare, fault_args, record_figures, reference_seconds, snapshot
from tests.faults.driver_kills import kill_and_resume


def _check(fault_run_template, reference_warehouse, tmp_path, n_kills: int, seed: int):
    run = Path(shutil.copytree(fault_run_template, tmp_path / "run"))
    warehouse = tmp_path / "killed.duckdb"
    report = kill_and_resume(fault_args(run, warehouse, "--actors", "1"), warehouse, tmp_path, n_kills,
                             max_delay_s=reference_seconds(reference_warehouse), seed=seed)
    figures = [compare(finished, reference_warehouse) for finished in report.finished]
    record_figures(f"driver kill -9 x{n_kills}", report.kills, len(report.finished),
                   **{name: sum(f[name] for f in figures) for name in ("rows_lost", "duplicate_rows", "wrong_rows")})
    assert report.final_returncode == 0, report.final_output
    assert report.kills == n_kills and report.finished[-1] == warehouse
    assert all(f == {"rows_lost": 0, "duplicate_rows": 0, "wrong_rows": 0} for f in figures), figures
    assert snapshot(warehouse) == snapshot(reference_warehouse)


def test_two_driver_kills_then_resume(fault_run_template, reference_warehouse, tmp_path):
    _check(fault_run_template, reference_warehouse, tmp_path, n_kills=2, seed=1)


@pytest.mark.slow
def test_twenty_driver_kills_then_resume(fault_run_template, reference_warehouse, tmp_path):
    _check(fault_run_template, reference_warehouse, tmp_path, n_kills=20, seed=20)
