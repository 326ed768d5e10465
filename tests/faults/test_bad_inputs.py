"""Bad user input, through the real `dynamics` command: one line `error: …` naming the input, exit 2,
no traceback. The cases run two at a time in one fixture; each is asserted in its own test.

The same list is the table in README.md's "Troubleshooting" section.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.faults.conftest import record_figures
from tests.jobs.conftest import sweep_env

# (case id, argv after `dynamics`, text the one-line message must contain); {run}, {tmp}, {ro}, {wh}
# are filled in by the fixture: the toy run, a scratch folder, a read-only mount, a valid warehouse
CASES = [
    ("unknown-model", ["sweep", "--model", "EleutherAI/pythia-15m"], "pythia-15m"),
    ("bad-step-spec", ["sweep", "--model", "EleutherAI/pythia-14m", "--steps", "ten"], "ten"),
    ("unpublished-step", ["sweep", "--model", "EleutherAI/pythia-14m", "--steps", "3"], "3"),
    ("missing-task-dir", ["sweep", "--local", "{run}", "--tasks", "{tmp}/no-tasks"], "no-tasks"),
    ("malformed-task-file", ["sweep", "--local", "{run}", "--tasks", "{tmp}/bad-tasks"], "not valid JSON"),
    ("unwritable-warehouse-folder", ["sweep", "--local", "{run}", "--warehouse", "{ro}/new.duckdb"], "new.duckdb"),
    ("read-only-warehouse-file", ["sweep", "--local", "{run}", "--warehouse", "{ro}/w.duckdb"], "w.duckdb"),
    ("warehouse-folder-missing", ["sweep", "--local", "{run}", "--warehouse", "{tmp}/no-dir/w.duckdb"], "create"),
    ("warehouse-is-a-directory", ["sweep", "--local", "{run}", "--warehouse", "{tmp}"], "is a directory"),
    ("warehouse-not-duckdb", ["sweep", "--local", "{run}", "--warehouse", "{tmp}/notes.txt"], "not a DuckDB warehouse"),
    ("newer-schema-warehouse", ["sweep", "--local", "{run}", "--warehouse", "{tmp}/future.duckdb"], "schema version 99"),
    ("newer-schema-sql", ["sql", "--warehouse", "{tmp}/future.duckdb", "SELECT 1"], "upgrade"),
    ("bad-sql", ["sql", "--warehouse", "{wh}", "SELEC * FROM checkpoints"], "SELEC"),
    ("sql-missing-warehouse", ["sql", "--warehouse", "{tmp}/missing.duckdb", "SELECT 1"], "missing.duckdb"),
    ("no-fv-with-fv-prompts", ["sweep", "--local", "{run}", "--no-fv", "--fv-prompts", "2"], "--no-fv"),
    ("zero-actors", ["sweep", "--local", "{run}", "--actors", "0"], "--actors"),
    ("negative-cache-bound", ["sweep", "--local", "{run}", "--max-cache-gb", "-1"], "--max-cache-gb"),
    ("zero-fv-prompts", ["sweep", "--local", "{run}", "--fv-prompts", "0"], "--fv-prompts"),
    ("zero-induction-sequences", ["sweep", "--local", "{run}", "--induction-sequences", "0"], "--induction-sequences"),
    ("steps-without-a-model", ["sweep", "--steps", "0,1"], "--steps needs --model or --local"),
    ("missing-local-folder", ["sweep", "--local", "{tmp}/no-run"], "no-run"),
    ("local-folder-without-steps", ["sweep", "--local", "{tmp}/empty-run"], "step<N>"),
    ("missing-heldout-file", ["sweep", "--local", "{run}", "--heldout", "{tmp}/missing.txt"], "missing.txt"),
    ("heldout-bad-suffix", ["sweep", "--local", "{run}", "--heldout", "{tmp}/notes.doc"], ".doc"),
    ("score-unknown-revision", ["score", "--local", "{run}", "--revision", "step3"], "step 3 is not a published"),
    ("score-revision-not-a-step", ["score", "--local", "{run}", "--revision", "latest"], "latest"),
    ("report-missing-warehouse", ["report", "--warehouse", "{tmp}/missing.duckdb", "--out", "{tmp}/r"], "missing.duckdb"),
    ("report-into-non-empty-folder", ["report", "--warehouse", "{wh}", "--out", "{tmp}/full"], "--overwrite"),
    ("toy-unknown-preset", ["toy", "--preset", "nope"], "nope"),
]
ARGPARSE_CASES = {"toy-unknown-preset"}  # argparse's own usage line + 'dynamics toy: error: …'


@pytest.fixture(scope="module")
def outcomes(fault_run_template, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    folders = _inputs(tmp)
    filled = {"run": str(fault_run_template), "tmp": str(tmp), **folders}
    env = sweep_env(tmp)

    def run(case: tuple) -> subprocess.CompletedProcess:
        argv = [arg.format(**filled) for arg in case[1]]
        return subprocess.run([sys.executable, "-m", "jobs.cli", *argv], env=env, cwd=tmp, capture_output=True,
                              text=True, timeout=300)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            yield dict(zip([c[0] for c in CASES], pool.map(run, CASES)))
    finally:
        subprocess.run(["umount", folders["ro"]], check=False)


def _inputs(tmp: Path) -> dict[str, str]:
    from dynamics.tasks.todd import REFERENCE_FV_TASKS
    from warehouse.db import connect_write

    bad_tasks = tmp / "bad-tasks" / "abstractive"
    bad_tasks.mkdir(parents=True)
    (bad_tasks / f"{REFERENCE_FV_TASKS[0]}.json").write_text('[{"input": "hot", "output": ')
    (tmp / "empty-run").mkdir()
    (tmp / "notes.txt").write_text("not a database\n" * 100)
    (tmp / "notes.doc").write_text("held-out text")
    (tmp / "full").mkdir()
    (tmp / "full" / "mine.txt").write_text("the user's own file")
    warehouse = tmp / "w.duckdb"
    with connect_write(warehouse):
        pass
    with connect_write(tmp / "future.duckdb") as con:
        con.execute("INSERT INTO schema_version (version) VALUES (99)")
    # root ignores file modes, so 'read-only' is a read-only filesystem: a tmpfs remounted ro
    ro = tmp / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(ro)], check=True)
    with connect_write(ro / "w.duckdb"):
        pass
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    return {"wh": str(warehouse), "ro": str(ro)}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(outcomes, case):
    name, _, expected = case
    result = outcomes[name]
    record_figures("bad user inputs", 1)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    if name in ARGPARSE_CASES:
        assert lines[-1].startswith("usage:") is False and "error:" in lines[-1] and expected in lines[-1], lines
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert expected in lines[0], lines[0]
    assert result.stdout == ""
