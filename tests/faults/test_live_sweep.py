"""One sweep watched from outside while faults hit it: a scoring actor is killed -9 mid-checkpoint,
readers query the warehouse all along, and its sockets and files are inspected.

The sweep runs from a copy of the code with HOME, DYNAMICS_HOME and TMPDIR inside the test's folder and
Ray's authentication left at its default, as a user would run it; then:
- the killed actor is restarted, its checkpoint retried, the sweep exits 0 and the warehouse equals
  an uninterrupted sweep's;
- no reader query fails and no reader ever sees a checkpoint with part of its rows;
- every socket the sweep's processes listen on is bound to loopback;
- nothing is written outside the named paths, HOME/.ray (Ray's auth token) and TMPDIR/ray (Ray's session).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.faults.conftest import FAULT_STEPS, compare, fault_args, record_figures, snapshot
from tests.faults.procs import is_loopback, sweep_processes, tcp_listeners
from tests.jobs.conftest import REPO

PACKAGES = ("jobs", "dynamics", "warehouse", "reports")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def live_sweep(fault_run_template, reference_warehouse, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    checkout = tmp / "checkout"
    for package in PACKAGES:
        shutil.copytree(REPO / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    run = Path(shutil.copytree(fault_run_template, tmp / "run"))
    home, dynamics_home, out, cwd = (tmp / name for name in ("home", "dynamics-home", "out", "cwd"))
    for folder in (home, dynamics_home, out, cwd):
        folder.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(HOME=str(home), DYNAMICS_HOME=str(dynamics_home), TMPDIR=str(ray_tmp), PYTHONPATH=str(checkout))
    before = {root: _files(root) for root in (checkout, home, run, cwd)}
    warehouse = out / "live.duckdb"
    expected = _expected_counts(reference_warehouse)
    stop = tmp / "stop-readers"
    reader = subprocess.Popen([sys.executable, str(REPO / "tests/faults/reader_loop.py"), str(warehouse), str(stop),
                               json.dumps(expected)], env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    driver = subprocess.Popen([sys.executable, str(checkout / "jobs/sweep_checkpoints.py"),
                               *map(str, fault_args(run, warehouse, "--actors", "1"))],
                              env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, scoring_since, listeners, sql_runs, titles = None, {}, set(), [], {}
    sql_cli = None
    try:
        while driver.poll() is None:
            procs = sweep_processes(dynamics_home)
            titles.update(procs)
            listeners |= set(tcp_listeners(set(procs)))
            scoring = [pid for pid, title in procs.items() if title.startswith("ray::ScoringWorker.score")]
            for pid in scoring:
                scoring_since.setdefault(pid, time.monotonic())
            # kill the actor once, mid-checkpoint: after it has scored a while, with checkpoints left to do
            if killed is None and scoring and _ok_rows(sql_runs) >= 1:
                pid = scoring[0]
                still_scoring = sweep_processes(dynamics_home).get(pid, "").startswith("ray::ScoringWorker.score")
                if time.monotonic() - scoring_since[pid] > 0.05 and still_scoring:
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
            if sql_cli is None or sql_cli.poll() is not None:
                if sql_cli is not None:
                    sql_runs.append((sql_cli.returncode, *sql_cli.communicate()))
                if warehouse.exists():
                    sql_cli = subprocess.Popen(
                        [sys.executable, "-m", "jobs.cli", "sql", "--warehouse", str(warehouse), "--format", "csv",
                         "SELECT count(*) AS n FROM checkpoints WHERE status = 'ok'"],
                        env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(0.02)
        stdout, stderr = driver.communicate()
    finally:
        if driver.poll() is None:
            driver.kill()
        stop.touch()
        readers = json.loads(reader.communicate(timeout=120)[0])
        if sql_cli is not None:
            sql_runs.append((sql_cli.wait(), *sql_cli.communicate()))
    after = {root: _files(root) for root in (checkout, home, run, cwd)}
    yield {
        "returncode": driver.returncode, "stdout": stdout, "stderr": stderr, "killed": killed, "readers": readers,
        "sql_runs": sql_runs, "listeners": listeners, "titles": titles, "warehouse": warehouse, "expected": expected,
        "reference": reference_warehouse, "new_files": {str(r): sorted(after[r] - before[r]) for r in after},
        "roots": {"checkout": checkout, "home": home, "run": run, "cwd": cwd}, "ray_tmp": ray_tmp,
    }
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _expected_counts(reference: Path) -> dict[str, list[int]]:
    """step -> its (head, task, metric) row counts in the uninterrupted sweep (ablation steps have more)."""
    import duckdb

    with duckdb.connect(str(reference), read_only=True) as con:
        rows = con.execute(
            "SELECT c.step, "
            + ", ".join(f"(SELECT count(*) FROM {t} x WHERE x.step = c.step)"
                        for t in ("head_scores", "head_task_scores", "checkpoint_metrics"))
            + " FROM checkpoints c WHERE c.status = 'ok'"
        ).fetchall()
    return {str(step): list(counts) for step, *counts in rows}


def _ok_rows(sql_runs: list) -> int:
    """The latest `dynamics sql` count of ok checkpoints (0 before any)."""
    for returncode, out, _ in reversed(sql_runs):
        if returncode == 0:
            return int(out.split()[-1])
    return 0


def test_actor_killed_mid_checkpoint_is_restarted_and_the_checkpoint_retried(live_sweep):
    if live_sweep["warehouse"].exists():
        record_figures("actor kill -9 mid-checkpoint", int(live_sweep["killed"] is not None),
                       int(live_sweep["returncode"] == 0), **compare(live_sweep["warehouse"], live_sweep["reference"]))
    assert live_sweep["killed"] is not None, "no scoring actor was caught mid-checkpoint"
    assert live_sweep["returncode"] == 0, live_sweep["stderr"][-3000:]
    assert "actor died scoring" in live_sweep["stderr"] and "retrying (1/2)" in live_sweep["stderr"]
    assert f"{len(FAULT_STEPS)} planned, {len(FAULT_STEPS) - 1} scored" in live_sweep["stdout"]
    assert snapshot(live_sweep["warehouse"]) == snapshot(live_sweep["reference"])


def test_readers_never_fail_and_never_see_a_partial_checkpoint(live_sweep):
    readers = live_sweep["readers"]
    record_figures("readers during a sweep (queries)", readers["queries"] + len(live_sweep["sql_runs"]),
                   wrong_rows=len(readers["partial"]) + len(readers["failures"]))
    assert readers["failures"] == [] and readers["partial"] == []
    assert readers["queries"] >= 20 and readers["max_ok_seen"] >= 2  # they read while the sweep wrote
    assert all(min(counts) > 0 for counts in live_sweep["expected"].values()), live_sweep["expected"]
    sql_runs = live_sweep["sql_runs"]
    assert len(sql_runs) >= 3 and all(code == 0 for code, _, _ in sql_runs), [r for r in sql_runs if r[0] != 0]


def test_every_listener_of_a_local_ray_is_on_loopback(live_sweep):
    """The driver, GCS, raylet, agents and workers all listen on 127.0.0.1 only (running_ray's doing:
    Ray 2.60 on Linux otherwise binds the machine's address or every interface), and no dashboard runs."""
    listeners, titles = live_sweep["listeners"], live_sweep["titles"]
    names = {name for *_, name, _ in listeners}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), listeners
    assert all(is_loopback(address) for address, *_ in listeners), [
        (address, port, titles.get(pid, name)[:100]) for address, port, name, pid in listeners if not is_loopback(address)]
    assert not any(port == 8265 for _, port, _, _ in listeners)  # the dashboard's port


def test_nothing_is_written_outside_the_named_paths(live_sweep):
    new = live_sweep["new_files"]
    roots = live_sweep["roots"]
    assert new[str(roots["checkout"])] == [] and new[str(roots["cwd"])] == []
    assert set(new[str(roots["run"])]) <= {".dynamics/sha256.json", ".dynamics/sha256.json.lock"}  # weight hashes
    assert all(path.startswith(".ray/") for path in new[str(roots["home"])]), new[str(roots["home"])]
    assert (live_sweep["ray_tmp"] / "ray").is_dir()  # Ray's session folder follows TMPDIR
