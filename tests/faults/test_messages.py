"""Case 8 of the red-team run: messages that were not the documented ones. A warehouse in an immutable
folder gave a raw `IO Error … Operation not permitted`; DYNAMICS_HOME pointing at a file gave `[Errno 17]`
without naming the variable, and DYNAMICS_HOME="" silently fell back to the shared default warehouse;
`report --out` into a read-only folder gave `[Errno 1]`; `--max-retries -1` was accepted; a reader waited
up to 60 s on a held lock without a word; aborted runs kept finished_at NULL with no status.

Each now gives the one-line `error: …` of the README's troubleshooting table (exit 2), a waiting reader
says so after a couple of seconds, and a run that ends badly is marked 'failed' with its error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest
import torch

from tests.faults.conftest import record_figures
from tests.jobs.conftest import REPO, sweep_env
from warehouse.db import connect_write

CASE = "undocumented messages"

# (case id, argv after `dynamics`, extra environment, text the one line must contain); {run}, {tmp}, {imm},
# {wh} are filled in: the toy run, a scratch folder, an immutable folder (chattr +i), a valid warehouse
CASES = [
    ("warehouse-in-an-immutable-folder", ["sweep", "--local", "{run}", "--warehouse", "{imm}/w.duckdb"], {},
     "cannot write the warehouse"),
    ("dynamics-home-is-a-file", ["sweep", "--local", "{run}", "--no-report"], {"DYNAMICS_HOME": "{tmp}/home-file"},
     "DYNAMICS_HOME={tmp}/home-file is a file, not a folder"),
    ("dynamics-home-empty", ["sweep", "--local", "{run}", "--no-report"], {"DYNAMICS_HOME": ""},
     "DYNAMICS_HOME is set but empty"),
    ("report-into-an-immutable-folder", ["report", "--warehouse", "{wh}", "--out", "{imm}/report"], {},
     "cannot write the report into"),
    ("negative-max-retries", ["sweep", "--local", "{run}", "--max-retries", "-1"], {},
     "--max-retries must be an integer of at least 0"),
]


@pytest.fixture(scope="module")
def outcomes(fault_run_template, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, str]]:
    """case id → (the command's outcome, the text its one line must contain)."""
    tmp = tmp_path_factory.mktemp("messages")
    (tmp / "home-file").write_text("not a folder")
    with connect_write(tmp / "w.duckdb"):
        pass
    immutable = tmp / "immutable"
    immutable.mkdir()
    subprocess.run(["chattr", "+i", str(immutable)], check=True)  # as root: EPERM, even for root
    filled = {"run": str(fault_run_template), "tmp": str(tmp), "imm": str(immutable), "wh": str(tmp / "w.duckdb")}

    def run(case: tuple) -> tuple[subprocess.CompletedProcess, str]:
        _, argv, extra, expected = case
        env = {**sweep_env(tmp), **{k: v.format(**filled) for k, v in extra.items()}}
        return subprocess.run([sys.executable, "-m", "jobs.cli", *(a.format(**filled) for a in argv)], env=env,
                              cwd=tmp, capture_output=True, text=True, timeout=300), expected.format(**filled)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            yield dict(zip([c[0] for c in CASES], pool.map(run, CASES)))
    finally:
        subprocess.run(["chattr", "-i", str(immutable)], check=False)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_documented_one_line_message(outcomes, case):
    result, expected = outcomes[case[0]]
    lines = result.stderr.strip().splitlines()
    record_figures(CASE, 1, wrong_rows=int(result.returncode != 2))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert result.stdout == ""


def test_a_reader_waiting_on_a_held_lock_says_so(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    with connect_write(warehouse):
        pass
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(warehouse)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    reader = subprocess.Popen([sys.executable, "-m", "jobs.cli", "sql", "--warehouse", str(warehouse), "SELECT 1 AS n"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(8)  # the notice comes after 2 s of waiting; the reader also needs ~3 s to start
        holder.kill()  # the lock is released: the reader goes on
        holder.wait()
        stdout, stderr = reader.communicate(timeout=120)
    finally:
        for process in (holder, reader):
            if process.poll() is None:
                process.kill()
    record_figures(CASE, 1, wrong_rows=int(reader.returncode != 0))
    assert "waiting for the warehouse" in stderr and "another process holds it" in stderr, stderr
    assert reader.returncode == 0 and stdout.endswith("1\n(1 row)\n"), stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs to make the run fail")
def test_a_run_that_fails_is_marked_failed_with_its_error(fault_run_template, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    result = subprocess.run([sys.executable, "-m", "jobs.cli", "sweep", "--local", str(fault_run_template),
                             "--warehouse", str(warehouse), "--no-report", "--device", "cuda", "--fv-prompts", "2",
                             "--induction-sequences", "8", "--no-icl"], env=sweep_env(tmp_path), cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.execute("SELECT status, error, finished_at IS NOT NULL FROM runs").fetchall()
    record_figures(CASE, 1, wrong_rows=int(runs[:1] != [("failed", runs[0][1], True)]) if runs else 1)
    assert result.returncode == 2 and "--device cuda but the Ray cluster has no GPUs" in result.stderr
    assert len(runs) == 1 and runs[0][0] == "failed" and runs[0][2], runs
    assert runs[0][1].startswith("InputError: --device cuda but the Ray cluster has no GPUs")
    assert os.path.exists(warehouse)
