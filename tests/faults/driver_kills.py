"""kill -9 of the sweep driver at random moments, each followed by a rerun that resumes the sweep.

Shared by test_driver_kills.py and benchmarks/fault_injection.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.procs import sweep_processes
from tests.jobs.conftest import SWEEP, sweep_env


@dataclass
class KillReport:
    kills: int = 0  # drivers killed while still running
    finished: list[Path] = field(default_factory=list)  # warehouses of sweeps that ran to the end
    final_returncode: int | None = None
    final_output: str = ""


def kill_and_resume(args: list, warehouse: Path, tmp_path: Path, n_kills: int, max_delay_s: float,
                    seed: int = 0) -> KillReport:
    """Kill -9 the sweep driver `n_kills` times, each after a random delay in [0.3, max_delay_s] s, each
    rerun resuming what the earlier ones wrote. A sweep that finishes before its kill moment closes a
    cycle: its warehouse is kept as `<stem>-cycle<k>.duckdb` and the next cycle starts from nothing.
    After the last kill the sweep is run to the end (`warehouse` then holds its result)."""
    rng = random.Random(seed)
    env = sweep_env(tmp_path)
    home = Path(env["DYNAMICS_HOME"])
    command = [sys.executable, str(SWEEP), *map(str, args)]
    report = KillReport()
    while report.kills < n_kills:
        driver = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            driver.wait(timeout=rng.uniform(0.3, max_delay_s))
            if driver.returncode == 0:
                cycle = warehouse.with_name(f"{warehouse.stem}-cycle{len(report.finished)}{warehouse.suffix}")
                report.finished.append(warehouse.rename(cycle))
        except subprocess.TimeoutExpired:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
            report.kills += 1
        reap_orphans(home)
    final = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    report.final_returncode, report.final_output = final.returncode, final.stdout + final.stderr[-3000:]
    if final.returncode == 0:
        report.finished.append(warehouse)
    reap_orphans(home)
    return report


def reap_orphans(dynamics_home: Path, grace_s: float = 10.0) -> None:
    """Wait for the killed driver's Ray processes to notice and exit; kill -9 (by pid) any that linger."""
    deadline = time.monotonic() + grace_s
    while (left := sweep_processes(dynamics_home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
