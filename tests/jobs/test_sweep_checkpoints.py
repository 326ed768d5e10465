"""The sweep job for real: a local Ray, a two-node Ray cluster with `ray job submit`, kill -9 and resume."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pytest

from tests.faults.procs import stop_processes
from tests.jobs.conftest import FAST_SCORING, REPO, RUN_STEPS, SWEEP, run_sweep, sweep_env

SCORE_COLUMNS = {
    "checkpoints": "model, step, settings_hash, status, duplicate_of, weights_sha256, error IS NOT NULL AS failed",
    "head_scores": "model, step, settings_hash, layer, head, metric, value, flag",
    "head_task_scores": "model, step, settings_hash, task, layer, head, metric, value, flag",
    "checkpoint_metrics": "model, step, settings_hash, metric, value, flag",
}


def snapshot(warehouse: Path) -> dict[str, list[tuple]]:
    """Every stored number and status, without run ids, timestamps or timings."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.execute(f"SELECT {c} FROM {t} ORDER BY ALL").fetchall() for t, c in SCORE_COLUMNS.items()}


def sweep_args(run: Path, warehouse: Path, *extra) -> list:
    return ["--local", run, "--warehouse", warehouse, *FAST_SCORING, "--no-report", *extra]


def test_local_sweep_scores_every_checkpoint_and_resumes(sweep_run, tmp_path):
    warehouse = tmp_path / "w.duckdb"
    first = run_sweep(sweep_args(sweep_run, warehouse), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    expected = f"{len(RUN_STEPS)} planned, {len(RUN_STEPS) - 1} scored, 0 skipped as already done, 1 duplicates, 0 failed"
    assert expected in first.stdout
    tables = snapshot(warehouse)
    status = {row[1]: (row[3], row[4]) for row in tables["checkpoints"]}
    assert status == {0: ("ok", None), 1: ("duplicate", 0), 2: ("ok", None), 4: ("ok", None), 8: ("ok", None)}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        per_checkpoint = con.execute(
            "SELECT step, metric, count(*), count(value) FROM head_scores GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        metrics = dict(con.execute(
            "SELECT step, list(DISTINCT metric ORDER BY metric) FROM checkpoint_metrics GROUP BY step").fetchall())
        model = con.execute("SELECT n_layers, n_heads, d_head, source FROM models").fetchall()
        ablated_steps = con.execute("SELECT DISTINCT step FROM ablations").fetchall()
        rankings = con.execute("SELECT DISTINCT ranking FROM ablations ORDER BY 1").fetchall()
    assert {(step, metric) for step, metric, _, _ in per_checkpoint} == {
        (s, m) for s in (0, 2, 4, 8) for m in ("copying", "duplicate_token", "fv", "induction", "prev_token")
    }
    assert all(n == 8 and finite == 8 for *_, n, finite in per_checkpoint)  # 2 layers × 4 heads
    assert model == [(2, 4, 8, "local")]
    # few-shot accuracy at every checkpoint; FV execution only where ablations run (no held-out text here)
    assert metrics[0] == metrics[2] == metrics[4] == ["fewshot_f1", "fewshot_shuffled_top1", "fewshot_top1"]
    assert {"fewshot_f1", "fv_exec_zero_shot", "fv_exec_zero_shot_fv", "fv_exec_zero_shot_random_fv"} <= set(metrics[8])
    assert ablated_steps == [(8,)] and rankings == [("fv",), ("induction",), ("random",)]

    again = run_sweep(sweep_args(sweep_run, warehouse), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(RUN_STEPS)} skipped as already done" in again.stdout
    assert snapshot(warehouse) == tables


def test_kill_9_of_the_driver_then_rerun_equals_an_uninterrupted_sweep(sweep_run, tmp_path):
    reference = tmp_path / "reference.duckdb"
    assert run_sweep(sweep_args(sweep_run, reference, "--heldout", sweep_run / "heldout.txt"), tmp_path).returncode == 0

    warehouse = tmp_path / "killed.duckdb"
    args = sweep_args(sweep_run, warehouse, "--heldout", sweep_run / "heldout.txt", "--actors", "1")
    driver = subprocess.Popen([sys.executable, str(SWEEP), *map(str, args)], env=sweep_env(tmp_path), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _has_ok_checkpoint(warehouse):
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.wait()
    partial = snapshot(warehouse)
    assert 1 <= sum(row[3] != "failed" for row in partial["checkpoints"]) < len(RUN_STEPS)

    rerun = run_sweep(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert snapshot(warehouse) == snapshot(reference)
    assert {"icl_token_loss", "loss_early", "loss_late"} <= {row[3] for row in snapshot(warehouse)["checkpoint_metrics"]}


def _has_ok_checkpoint(warehouse: Path) -> bool:
    if not warehouse.exists():
        return False
    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            return con.execute("SELECT count(*) FROM checkpoints WHERE status = 'ok'").fetchone()[0] > 0
    except duckdb.Error:  # the writer holds the lock right now
        return False


def test_corrupt_checkpoint_is_recorded_as_failed_and_the_sweep_goes_on(sweep_run, tmp_path):
    weights = sweep_run / "step4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    warehouse = tmp_path / "w.duckdb"
    result = run_sweep(sweep_args(sweep_run, warehouse), tmp_path)
    assert result.returncode == 1
    assert "1 failed" in result.stdout and "step4" in result.stdout
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = dict(con.execute("SELECT step, status FROM checkpoints").fetchall())
        error = con.execute("SELECT error FROM checkpoints WHERE step = 4").fetchone()[0]
        partial = con.execute("SELECT count(*) FROM head_scores WHERE step = 4").fetchone()[0]
    assert rows == {0: "ok", 1: "duplicate", 2: "ok", 4: "failed", 8: "ok"}
    assert "corrupt or truncated" in error and "model.safetensors" in error
    assert partial == 0


@pytest.fixture
def ray_cluster(tmp_path):
    """A Ray head and a second worker node on loopback, started with `ray start` as an operator would."""
    bin_dir = Path(sys.executable).parent
    # as from an activated virtual environment, so the job's `python` is this one; and the cluster's own
    # token, so that it needs nothing from ~/.ray (a fresh machine has none)
    env = {**sweep_env(tmp_path), "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    ray = str(bin_dir / "ray")
    # own session folder, never another Ray's; short, because Ray's socket paths must fit 107 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    port, dashboard, *agent_ports = free_ports(10)
    head = [ray, "start", "--head", "--num-cpus=1", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp_dir}",
            "--disable-usage-stats", "--include-dashboard=true", *node_ports(agent_ports[:4])]
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                        "--disable-usage-stats", *node_ports(agent_ports[4:])], env=env, check=True,
                       capture_output=True, timeout=120)
        address = f"http://127.0.0.1:{dashboard}"
        wait_until_jobs_are_accepted(ray, address, env, temp_dir)
        yield address, env, ray
    finally:
        stop_processes(Path(env["DYNAMICS_HOME"]))  # this cluster's processes only: other Rays keep running
        shutil.rmtree(temp_dir, ignore_errors=True)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def node_ports(ports: list[int]) -> list[str]:
    """Each node's agents on ports of its own: by default both nodes of one machine would take the same
    fixed agent port, and any process left holding it leaves the head without a job agent."""
    flags = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
             "--metrics-export-port")
    return [f"{flag}={p}" for flag, p in zip(flags, ports, strict=True)]


def wait_until_jobs_are_accepted(ray, address, env, temp_dir, timeout=180):
    """`ray start` returns before the dashboard agent has registered; until it has, a submission is
    refused with "No available agent ... try again later", so probe with a trivial job first."""
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run([ray, "job", "submit", "--address", address, "--", "python", "-c", "pass"],
                               env=env, capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            return
        if "No available agent" not in probe.stdout + probe.stderr or time.monotonic() > deadline:
            agent_logs = sorted(temp_dir.glob("session_latest/logs/dashboard_agent*.log"))
            tails = "".join(f"\n--- {log}\n" + log.read_text()[-3000:] for log in agent_logs)
            raise AssertionError(probe.stdout[-3000:] + probe.stderr[-3000:] + tails)
        time.sleep(2)


def test_ray_job_submit_to_a_two_node_cluster(sweep_run, tmp_path, ray_cluster):
    address, env, ray = ray_cluster
    warehouse = tmp_path / "cluster.duckdb"
    job = subprocess.run(
        [ray, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
         "python", "jobs/sweep_checkpoints.py", *map(str, sweep_args(sweep_run, warehouse, "--actors", "2"))],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    statuses = sorted(row[3] for row in snapshot(warehouse)["checkpoints"])
    assert statuses == ["duplicate", "ok", "ok", "ok", "ok"]
