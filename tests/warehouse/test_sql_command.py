"""`dynamics sql`: table and CSV output, the interactive shell, and exit codes."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import cli
from warehouse import writes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_warehouse(tmp_path_factory, head_rows) -> Path:
    path = tmp_path_factory.mktemp("sql") / "warehouse.duckdb"
    writes.upsert_model(path, "tiny", "gpt_neox", "local", n_layers=1, n_heads=2, d_model=8, d_head=4)
    for step in (0, 8):
        writes.write_checkpoint(path, {"model": "tiny", "step": step, "settings_hash": "s"},
                                head_rows("tiny", step, "s", {"induction": [[0.25 + step, float("nan")]]}))
    return path


def dynamics(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_a_query_prints_an_aligned_table(small_warehouse):
    result = dynamics("sql", "--warehouse", str(small_warehouse),
                      "SELECT step, head, value, flag FROM head_scores ORDER BY step, head")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "step  head  value  flag",
        "----  ----  -----  ----------",
        "   0     0   0.25  NULL",
        "   0     1   NULL  non_finite",
        "   8     0   8.25  NULL",
        "   8     1   NULL  non_finite",
        "(4 rows)",
    ]
    assert result.stderr == ""


def test_bad_sql_exits_2_with_one_line(small_warehouse):
    result = dynamics("sql", "--warehouse", str(small_warehouse), "SELECT nope FROM head_scores")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: query failed on") and "nope" in lines[0]


def test_csv_output_has_a_header(small_warehouse, capsys):
    code = cli.main(["sql", "--warehouse", str(small_warehouse), "--format", "csv",
                     "SELECT model, step, value FROM head_scores WHERE head = 0 ORDER BY step"])
    assert code == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["model", "step", "value"], ["tiny", "0", "0.25"], ["tiny", "8", "8.25"]]


def test_a_missing_warehouse_exits_2(tmp_path, capsys):
    assert cli.main(["sql", "--warehouse", str(tmp_path / "none.duckdb"), "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no warehouse at") and err.count("\n") == 1


def test_the_shell_runs_statements_prints_errors_and_goes_on(small_warehouse, monkeypatch, capsys):
    script = ("SELECT count(*) AS n\n  FROM head_scores;\n"
              "SELECT * FROM missing_table;\n"
              ".tables\n"
              ".schema models\n"
              ".bogus\n"
              "SELECT final_step FROM final_steps;\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    assert cli.main(["sql", "--warehouse", str(small_warehouse)]) == 0
    out = capsys.readouterr().out
    assert "n\n-\n4\n(1 row)" in out
    assert "error: query failed on" in out and "missing_table" in out
    assert re.search(r"^head_trajectories +view$", out, re.MULTILINE)
    assert re.search(r"^head_scores +base table$", out, re.MULTILINE)
    assert re.search(r"^models +d_head +INTEGER$", out, re.MULTILINE)
    assert "error: unknown helper .bogus; try .help" in out
    assert out.rstrip().endswith("final_step\n----------\n         8\n(1 row)")
