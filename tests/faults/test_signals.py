"""Case 7 of the red-team run: signals and processes. SIGTERM (what Slurm, Kubernetes and `timeout` send)
gave Ray's C++ stack dump and no `interrupted` line; after kill -9 of the driver, Ray's dashboard and
runtime-env agents (210 MB) outlived it by over a minute; and the test fixture's `ray stop --force` stopped
every Ray on the machine, a user's running sweep included.

Now SIGTERM ends a sweep like Ctrl-C (`interrupted`, exit 143, the run marked 'interrupted'; a rerun
finishes it), a watchdog kills what is left of a local Ray once its driver is gone, and tests stop only
the processes of their own Ray."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from tests.faults.conftest import compare, fault_args, record_figures, run_faulted_sweep, snapshot
from tests.faults.procs import stop_processes, sweep_processes
from tests.jobs.conftest import REPO, SWEEP, sweep_env

CASE = "signals and leftover processes"


def _start(run: Path, warehouse: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SWEEP), *map(str, fault_args(run, warehouse, "--actors", "1", *extra))],
                            env=sweep_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_until_scoring(home: Path, driver: subprocess.Popen, *also: str, timeout_s: float = 300) -> None:
    """Until an actor is scoring and, for each of `also`, a process whose title or command line holds it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and driver.poll() is None:
        titles = [t.lower() for t in sweep_processes(home).values()]
        if all(any(part in t for t in titles) for part in ("ray::scoringworker.score", *also)):
            return
        time.sleep(0.1)
    raise AssertionError(f"the sweep never started scoring with {also} running (exit status {driver.poll()})")


def _gone_after(home: Path, timeout_s: float) -> float | None:
    """Seconds until no process of the sweep is left, or None after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not sweep_processes(home):
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def test_sigterm_ends_a_sweep_like_ctrl_c_and_a_rerun_finishes_it(fault_run_template, reference_warehouse, tmp_path):
    run = Path(shutil.copytree(fault_run_template, tmp_path / "run"))
    warehouse, home = tmp_path / "w.duckdb", tmp_path / "home"
    driver = _start(run, warehouse, tmp_path)
    try:
        _wait_until_scoring(home, driver)
        time.sleep(1.0)
        driver.send_signal(signal.SIGTERM)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    gone_s = _gone_after(home, 30)
    stop_processes(home)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.execute("SELECT status, error, finished_at IS NOT NULL FROM runs").fetchall()
    rerun = run_faulted_sweep(fault_args(run, warehouse, "--actors", "1"), tmp_path)
    record_figures(CASE, 1, int(rerun.returncode == 0), **compare(warehouse, reference_warehouse))
    assert driver.returncode == 143, stderr[-3000:]
    assert stderr.rstrip().splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    assert "SIGTERM received" not in stderr  # Ray's C++ failure handler never ran
    assert re.search(r"checkpoints: 9 planned, \d+ scored", stdout)  # what was done before the signal
    assert runs == [("interrupted", "interrupted (Ctrl-C or SIGTERM)", True)]
    assert gone_s is not None, "processes of the interrupted sweep were still running 30 s later"
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert snapshot(warehouse) == snapshot(reference_warehouse)


def test_no_ray_process_outlives_a_driver_killed_with_sigkill(fault_run_template, tmp_path):
    run = Path(shutil.copytree(fault_run_template, tmp_path / "run"))
    home = tmp_path / "home"
    # more FV prompts than the other tests: checkpoints long enough for the agents to be up while one is scored
    driver = _start(run, tmp_path / "w.duckdb", tmp_path, "--fv-prompts", "24")
    try:
        # the raylet's dashboard and runtime-env agents (dashboard/agent.py, ray::DashboardAgent once retitled),
        # which outlived a killed driver by a minute
        _wait_until_scoring(home, driver, "agent")
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=60)
        gone_s = _gone_after(home, 30)
        left = sweep_processes(home)
    finally:
        stop_processes(home)
    record_figures(CASE, 1, wrong_rows=len(left))
    assert gone_s is not None and gone_s < 15, f"left after {gone_s} s: {left}"


def test_tests_stop_only_the_processes_of_their_own_ray(tmp_path):
    callers = [p for p in (REPO / "tests").rglob("*.py") if p != Path(__file__)
               and re.search(r"""["']stop["'],\s*["']--force["']|["']ray stop""", p.read_text())]
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    # a process named like Ray's raylet (what `ray stop --force` kills by name) in each of two 'sweeps'
    sleepers = {home: subprocess.Popen(["bash", "-c", "exec -a raylet sleep 120"],
                                       env={**os.environ, "DYNAMICS_HOME": str(home)}) for home in (mine, theirs)}
    try:
        time.sleep(0.2)
        stop_processes(mine, grace_s=5)
        alive = {home: process.poll() is None for home, process in sleepers.items()}
    finally:
        for process in sleepers.values():
            process.kill()
            process.wait()
    record_figures(CASE, 1, wrong_rows=len(callers) + int(not alive[theirs]))
    assert callers == [], f"tests that stop every Ray on the machine: {callers}"
    assert alive == {mine: False, theirs: True}
