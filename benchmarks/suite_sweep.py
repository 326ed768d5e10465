"""The sweep figures: N generated checkpoints on local disk scored by the real sweep command, timed from its
warehouse, and extrapolated to a model's full 154 checkpoints.

Only the command line and the warehouse's `checkpoints` table are used, so the sweep's internals can change
freely. From the warehouse (scored_at is when the driver wrote a checkpoint's rows):
    steady wall     = scored_at(last) − scored_at(first): the N−1 later checkpoints, back to back
    per checkpoint  = steady wall ÷ (N−1)
    overlap         = steady wall ÷ Σ(load_s + score_s) over those N−1 checkpoints
                      (below 1: reading the next checkpoint hides behind scoring the current one)
    154 checkpoints = start-up + 153 × per checkpoint + wind-down, with start-up = scored_at(first) − the
                      command's start (Python, Ray, actor, model build, first checkpoint) and wind-down =
                      the command's end − scored_at(last)
The first checkpoint is left out of the steady state: it builds the model and the scorer, and nothing
precedes it to overlap with.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import torch

from benchmarks.random_models import NeoxShape, build_random_model, release_device_memory
from benchmarks.suite_runner import CommandResult, Measured, StageTimeout, run_command

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "jobs" / "sweep_checkpoints.py"
SWEEP_FIGURES = ("sweep_s_per_checkpoint", "sweep_min_154_checkpoints", "sweep_overlap")
FULL_RUN_CHECKPOINTS = 154  # every Pythia model's published steps
FIRST_STEP = 2000  # steps > 1000 are scored in the late-step dtype (bf16 on GPU), as most of a real sweep
CHECKPOINT_DTYPE = torch.float16  # Pythia's weight files are fp16


@dataclass(frozen=True)
class SweepPlan:
    shape: NeoxShape
    n_checkpoints: int
    arguments: tuple[str, ...]  # sweep flags beyond where to read and write (device, actors, scoring settings)
    settings: str  # the scoring settings those flags give, in words


@dataclass(frozen=True)
class CheckpointTiming:
    step: int
    status: str
    error: str | None
    load_s: float | None
    score_s: float | None
    scored_at_s: float  # epoch seconds


def write_local_run(root: Path, plan: SweepPlan, tokenizer, device: str) -> list[int]:
    """`root/step<N>/` save_pretrained folders of a random `plan.shape` model, each nudged so every
    checkpoint has its own weights (and hash), plus the tokenizer in `root`; built on `device`."""
    steps = [FIRST_STEP + 1000 * i for i in range(plan.n_checkpoints)]
    tokenizer.save_pretrained(root)
    model = build_random_model(plan.shape, device, CHECKPOINT_DTYPE, bos_id=tokenizer.bos_token_id).model
    with torch.no_grad():
        for step in steps:
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter), alpha=1e-3)
            model.save_pretrained(root / f"step{step}")
    del model
    release_device_memory()
    return steps


def sweep_command(root: Path, tasks_dir: Path, warehouse: Path, plan: SweepPlan) -> list[str]:
    return [sys.executable, str(SWEEP), "--local", str(root), "--tasks", str(tasks_dir), "--warehouse", str(warehouse),
            "--no-report", *plan.arguments]


def sweep_environment(home: Path) -> dict[str, str]:
    """The sweep starts its own local Ray (no $RAY_ADDRESS) and keeps its files under `home`; that
    DYNAMICS_HOME also marks its processes (Ray's inherit the driver's environment)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(DYNAMICS_HOME=str(home), PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    return env


def measure_sweep(plan: SweepPlan, tokenizer, tasks_dir: Path, out: Path, device: str, deadline: float) -> Measured:
    """Write the checkpoints, sweep them, read the warehouse; the checkpoints are deleted afterwards."""
    root, warehouse = out / "sweep-run", out / "sweep.duckdb"
    warehouse.unlink(missing_ok=True)
    try:
        started = time.monotonic()
        steps = write_local_run(root, plan, tokenizer, device)
        write_s = time.monotonic() - started
        command = sweep_command(root, tasks_dir, warehouse, plan)
        started_at_s = time.time()
        completed, stopped = run_sweep(command, out, deadline)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    timings = read_checkpoint_timings(warehouse) if warehouse.exists() else []
    if completed is not None and completed.returncode != 0 and all(t.status == "ok" for t in timings):
        raise RuntimeError(f"sweep exited {completed.returncode}: {_last_line(completed.output)}")
    measured = sweep_figures(timings, started_at_s, completed.ended_at_s if completed else time.time(), stopped)
    measured.notes.insert(0, f"{len(steps)} {plan.shape.label}-shaped checkpoints written in {write_s:.1f} s; "
                             f"`{' '.join(Path(c).name if '/' in c else c for c in command[1:])}` "
                             f"(scoring: {plan.settings})")
    measured.details.update(write_s=write_s, command=command, steps=steps)
    return measured


def run_sweep(command: list[str], out: Path, deadline: float) -> tuple[CommandResult | None, str | None]:
    """The sweep command's result (its output saved in `out`), or None and why it was stopped at `deadline`."""
    try:
        completed = run_command(command, deadline - time.monotonic() - 3, env=sweep_environment(out / "sweep-home"), cwd=out)
    except StageTimeout as err:  # checkpoints scored so far are in the warehouse: still a measurement
        return None, str(err)
    (out / "sweep-output.txt").write_text(completed.output)
    return completed, None


def read_checkpoint_timings(warehouse: Path) -> list[CheckpointTiming]:
    from warehouse.queries import query  # needs duckdb and polars: imported only where the sweep ran

    frame = query(warehouse, "SELECT step, status, error, load_s, score_s, scored_at FROM checkpoints ORDER BY scored_at")
    return [
        CheckpointTiming(row["step"], row["status"], row["error"], row["load_s"], row["score_s"],
                         row["scored_at"].replace(tzinfo=UTC).timestamp())  # naive UTC in the warehouse
        for row in frame.iter_rows(named=True)
    ]


def sweep_figures(
    timings: Sequence[CheckpointTiming], started_at_s: float, ended_at_s: float, stopped: str | None = None
) -> Measured:
    """The figures of the module docstring from the warehouse rows and the command's start and end (epoch s)."""
    failed = [t for t in timings if t.status != "ok"]
    if failed:
        raise RuntimeError(f"checkpoint step {failed[0].step} is {failed[0].status}: {failed[0].error}")
    if len(timings) < 2:
        raise RuntimeError(f"{len(timings)} checkpoint(s) scored{f' ({stopped})' if stopped else ''}; "
                           "the steady state needs at least 2")
    first, steady = timings[0], timings[1:]
    steady_wall_s = timings[-1].scored_at_s - first.scored_at_s
    busy_s = sum(t.load_s + t.score_s for t in steady)
    per_checkpoint_s = steady_wall_s / len(steady)
    startup_s = first.scored_at_s - started_at_s
    wind_down_s = 0.0 if stopped else ended_at_s - timings[-1].scored_at_s
    projected_s = startup_s + (FULL_RUN_CHECKPOINTS - 1) * per_checkpoint_s + wind_down_s
    figures = {
        "sweep_s_per_checkpoint": per_checkpoint_s,
        "sweep_min_154_checkpoints": projected_s / 60,
        "sweep_overlap": steady_wall_s / busy_s,
    }
    notes = [
        f"{len(timings)} checkpoints scored{f' before the sweep was {stopped}' if stopped else ''}; "
        f"start-up {startup_s:.1f} s (to the first checkpoint's rows), wind-down {wind_down_s:.1f} s",
        f"overlap = {steady_wall_s:.2f} s (scored_at of the last checkpoint − of the first: the {len(steady)} later "
        f"checkpoints) ÷ {busy_s:.2f} s (their Σ load_s + score_s) = {steady_wall_s / busy_s:.3f}",
        f"per checkpoint {per_checkpoint_s:.2f} s → {FULL_RUN_CHECKPOINTS} checkpoints ≈ {startup_s:.1f} s + "
        f"{FULL_RUN_CHECKPOINTS - 1} × {per_checkpoint_s:.2f} s + {wind_down_s:.1f} s = {projected_s / 60:.1f} min "
        "(every checkpoint at the late-step dtype; a real run's 11 steps ≤ 1000 are scored in fp32)",
    ]
    details = {
        "checkpoints_scored": len(timings), "stopped": stopped, "startup_s": startup_s, "wind_down_s": wind_down_s,
        "steady_wall_s": steady_wall_s, "steady_load_plus_score_s": busy_s,
        "per_checkpoint": [{"step": t.step, "load_s": t.load_s, "score_s": t.score_s} for t in timings],
    }
    return Measured(figures, details, notes)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
