"""Case 3 of the red-team run: a sweep wrote into a truncated warehouse (a copy cut short): `dynamics sql`
answered as if nothing were wrong, and the sweep started Ray, inserted a `runs` row and changed the file
before failing with a raw `IO Error: Could not read enough bytes`.

Now `warehouse.db.check_intact` compares the file's size with the blocks its catalogue uses; the sweep,
`dynamics sql` and `dynamics export` run it first and refuse a damaged file in one line, writing nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dynamics.errors import InputError
from tests.faults.conftest import fault_args, record_figures
from tests.jobs.conftest import REPO, sweep_env
from warehouse.db import check_intact

CASE = "truncated warehouse"
BLOCK_BYTES, HEADER_BYTES = 262_144, 3 * 4096  # DuckDB's default block size and file headers


def _cut(source: Path, target: Path, size: int) -> Path:
    shutil.copy(source, target)
    os.truncate(target, size)
    return target


def test_every_cut_of_a_warehouse_is_detected(reference_warehouse, tmp_path):
    check_intact(reference_warehouse)  # the whole file passes
    size = reference_warehouse.stat().st_size
    blocks = (size - HEADER_BYTES) // BLOCK_BYTES
    cuts = sorted({size - 1, size - 4096, size // 3, 100, HEADER_BYTES,
                   *(HEADER_BYTES + k * BLOCK_BYTES + offset for k in range(blocks) for offset in (0, 5000))})
    undetected = []
    for cut in cuts:
        try:
            check_intact(_cut(reference_warehouse, tmp_path / "cut.duckdb", cut))
            undetected.append(cut)
        except InputError as err:
            assert "is damaged" in str(err) and "\n" not in str(err), err
    record_figures(CASE, len(cuts), wrong_rows=len(undetected))
    assert undetected == [], f"cuts of {size} bytes not detected: {undetected}"


@pytest.fixture
def truncated(reference_warehouse, tmp_path) -> Path:
    return _cut(reference_warehouse, tmp_path / "cut.duckdb", reference_warehouse.stat().st_size // 3)


def _dynamics(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *map(str, args)], env=sweep_env(tmp_path), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["sql", "export", "sweep", "default-sweep"])
def test_a_truncated_warehouse_is_refused_in_one_line_and_left_as_it_was(command, truncated, fault_run_template,
                                                                        tmp_path):
    before = hashlib.sha256(truncated.read_bytes()).hexdigest()
    args = {
        "sql": ["sql", "--warehouse", truncated, "SELECT count(*) FROM checkpoints"],
        "export": ["export", "--warehouse", truncated, "--out", tmp_path / "x.parquet", "head_scores"],
        "sweep": ["sweep", *fault_args(fault_run_template, truncated)],
        # the embedded default: refused before its toy suite trains (minutes), not after
        "default-sweep": ["sweep", "--warehouse", truncated, "--no-report"],
    }[command]
    result = _dynamics(args, tmp_path)
    lines = result.stderr.strip().splitlines()
    changed = hashlib.sha256(truncated.read_bytes()).hexdigest() != before
    record_figures(CASE, 1, wrong_rows=int(changed))
    assert result.returncode == 2 and len(lines) == 1 and result.stdout == "", result.stderr[-3000:]
    assert lines[0].startswith("error: warehouse ") and "is damaged" in lines[0] and "backup" in lines[0]
    assert not changed and not (tmp_path / "x.parquet").exists()
    assert not (tmp_path / "home" / "toy").exists()  # nothing trained
