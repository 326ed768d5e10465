"""The GPU benchmark suite in its CPU smoke mode: every stage runs (a real sweep included) and every figure
comes out as a number, on the screen and in the JSON file, so the suite cannot rot while no GPU is at hand."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_suite import cpu_smoke_profile, figure_names
from tests.faults.procs import sweep_processes

REPO = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 260  # it takes about a minute on 2 shared cores; the suite itself stops by 200 s
FIGURE_LINE = re.compile(r"^([\w.\-]+)=(.*)$", re.MULTILINE)


def run_smoke(out: Path) -> tuple[int, str, dict[int, str]]:
    """The suite as `make` would run it, in a process group of its own: exit status, output, and the
    processes of its sweep still running once it returned (found by the sweep's DYNAMICS_HOME). Those,
    and anything left in the suite's group, are stopped before returning."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.gpu_suite", "--cpu-smoke", "--threads", "1", "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    leftovers: dict[int, str] = {}
    try:
        output, _ = process.communicate(timeout=SMOKE_TIMEOUT_S)
        leftovers = sweep_processes(out / "sweep-home")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pid in sweep_processes(out / "sweep-home"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return process.returncode, output, leftovers


def is_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def test_cpu_smoke_reports_every_figure_as_a_number(tmp_path: Path) -> None:
    out = tmp_path / "out"
    returncode, output, leftovers = run_smoke(out)
    tail = output[-4000:]
    expected = figure_names(cpu_smoke_profile())
    printed = dict(FIGURE_LINE.findall(output))
    assert [name for name in expected if not is_number(printed.get(name))] == [], tail
    assert returncode == 0, tail

    results = json.loads((out / "figures.json").read_text())
    assert list(results["figures"]) == expected
    assert all(is_number(value) for value in results["figures"].values()), results["figures"]
    assert results["environment"]["torch"] and results["environment"]["transformers"]
    assert all(stage["error"] is None and stage["wall_s"] >= 0 for stage in results["stages"])
    assert f"figures written to {out / 'figures.json'}" in output
    assert leftovers == {}, f"the suite left its sweep's processes running: {leftovers}"
