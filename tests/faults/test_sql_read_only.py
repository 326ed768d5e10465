"""Case 2 of the red-team run: `dynamics sql` was not read-only. One argument attached another file
read-write, switched to it, detached the warehouse, re-attached it read-write and dropped a table; COPY …
TO, EXPORT DATABASE and read_csv('/etc/passwd') worked too, and several statements were accepted.

Now the connection reaches no file but the warehouse, with its configuration locked (DuckDB's
enable_external_access=false, lock_configuration=true, no extension autoloading, no spill folder), one
statement at a time; views and macros keep working, and `dynamics export` writes files."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from jobs import cli
from tests.faults.conftest import record_figures
from tests.jobs.conftest import REPO
from warehouse.db import connect_write

CASE = "dynamics sql reaching other files"


@pytest.fixture
def warehouse(reference_warehouse, tmp_path) -> Path:
    """A copy of the reference, with this package's views (a reader would otherwise bring them up to date)."""
    copy = Path(shutil.copy(reference_warehouse, tmp_path / "w.duckdb"))
    with connect_write(copy):
        pass
    return copy


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` and its sha256: what a refused statement must leave as it was."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _counts(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def test_the_attach_detach_drop_chain_of_the_report_is_refused(warehouse, tmp_path):
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    chain = (f"ATTACH '{other}' AS n (READ_WRITE); USE n; DETACH w; ATTACH '{warehouse}' AS w (READ_WRITE); "
             "DROP TABLE w.head_task_scores")
    before, counts = _fingerprint(tmp_path), _counts(warehouse)
    result = subprocess.run([sys.executable, "-m", "jobs.cli", "sql", "--warehouse", str(warehouse), chain], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    record_figures(CASE, 1, wrong_rows=sum(abs(counts[t] - n) for t, n in _counts(warehouse).items()))
    assert result.returncode == 2 and result.stdout == "", result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "one SQL statement at a time (got 5)" in lines[0]
    assert _fingerprint(tmp_path) == before and _counts(warehouse) == counts


STATEMENTS = {
    "attach-read-write": "ATTACH '{tmp}/other.duckdb' AS n (READ_WRITE)",
    "attach-new-file": "ATTACH '{tmp}/new.duckdb' AS n",
    "detach-the-warehouse": "DETACH w",
    "use-another-catalog": "USE memory",
    "copy-to-a-file": "COPY head_scores TO '{tmp}/out.csv'",
    "copy-into-the-spill-folder": "COPY head_scores TO '{tmp}/w.duckdb.tmp/out.csv'",
    "export-database": "EXPORT DATABASE '{tmp}/export'",
    "read-csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read-text": "SELECT * FROM read_text('/etc/hostname')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "install-extension": "INSTALL httpfs",
    "load-extension": "LOAD httpfs",
    "lift-the-lock": "SET enable_external_access = true",
    "reset-the-lock": "RESET lock_configuration",
    "drop-table": "DROP TABLE head_task_scores",
    "two-statements": "SELECT 1; SELECT 2",
}


@pytest.mark.parametrize("name", STATEMENTS)
def test_a_statement_that_would_reach_another_file_or_write_is_refused(name, warehouse, tmp_path, capsys):
    duckdb.connect(str(tmp_path / "other.duckdb")).close()
    before, counts = _fingerprint(tmp_path), _counts(warehouse)
    code = cli.main(["sql", "--warehouse", str(warehouse), STATEMENTS[name].format(tmp=tmp_path)])
    err = capsys.readouterr().err
    record_figures(CASE, 1, wrong_rows=int(_fingerprint(tmp_path) != before))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert _fingerprint(tmp_path) == before and _counts(warehouse) == counts


def test_views_and_macros_still_answer(warehouse, capsys):
    for sql in ("SELECT count(*) AS n FROM head_trajectories",
                "SELECT count(*) AS n FROM induction_to_fv_transitions(top_fraction := 0.5, z := 0)",
                "SELECT count(*) AS n FROM runs WHERE config->>'sweep' IS NOT NULL"):
        assert cli.main(["sql", "--warehouse", str(warehouse), "--format", "csv", sql]) == 0
        out = capsys.readouterr().out
        assert out.startswith("n\n") and int(out.split()[-1]) >= 0
    record_figures(CASE, 1)


def test_export_writes_tables_views_and_query_results(warehouse, tmp_path, capsys):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        expected = con.sql("SELECT * FROM head_scores").pl()
        checkpoints = con.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    out = tmp_path / "scores.parquet"
    assert cli.main(["export", "--warehouse", str(warehouse), "--out", str(out), "head_scores"]) == 0
    assert pl.read_parquet(out).sort(pl.all()).equals(expected.sort(pl.all()))

    folder = tmp_path / "csv"
    assert cli.main(["export", "--warehouse", str(warehouse), "--format", "csv", "--out", str(folder),
                     "checkpoints", "head_trajectories"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoints.csv", "head_trajectories.csv"]
    assert pl.read_csv(folder / "checkpoints.csv").height == checkpoints

    result = tmp_path / "fv.parquet"
    assert cli.main(["export", "--warehouse", str(warehouse), "--out", str(result), "--query",
                     "SELECT layer, head, max(value) AS best FROM head_scores WHERE metric = 'fv' GROUP BY ALL"]) == 0
    assert pl.read_parquet(result).columns == ["layer", "head", "best"]
    assert capsys.readouterr().out.split() == [str(out), str(folder / "checkpoints.csv"),
                                               str(folder / "head_trajectories.csv"), str(result)]

    for argv, expected_error in (
        (["--out", str(out), "head_scores"], "already exists; pass --overwrite"),
        (["--out", str(tmp_path / "x.parquet"), "no_such_table"], "no table or view 'no_such_table'"),
        (["--out", str(tmp_path / "missing" / "x.parquet"), "runs"], "does not exist"),
        (["--out", str(tmp_path / "x.parquet"), "--query", "COPY runs TO '/tmp/x.csv'"], "dynamics export"),
    ):
        assert cli.main(["export", "--warehouse", str(warehouse), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected_error in err, err
    # one of two files in the way: refused before either is written, not half an export
    (folder / "checkpoints.csv").unlink()
    assert cli.main(["export", "--warehouse", str(warehouse), "--format", "csv", "--out", str(folder),
                     "checkpoints", "head_trajectories"]) == 2
    assert f"{folder / 'head_trajectories.csv'} already exists" in capsys.readouterr().err
    assert not (folder / "checkpoints.csv").exists()
    assert cli.main(["export", "--warehouse", str(warehouse), "--out", str(out), "--overwrite", "runs"]) == 0
    record_figures(CASE, 1)
