"""Stages of a benchmark suite: each runs under a time limit, prints its figures as it finishes, and a
failing stage reports `figure=error: <one line>` for each of its figures while the suite goes on."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Figure = float | str  # a number, or 'error: <why>'


class StageTimeout(Exception):
    """A stage ran past its time limit."""


@dataclass
class Measured:
    """What a stage found: its figures, the numbers behind them, and lines worth printing."""

    figures: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class StageRecord:
    name: str
    limit_s: float
    wall_s: float
    error: str | None
    details: dict[str, Any]


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StageTimeout in the main thread once `seconds` have passed.

    SIGALRM's handler runs between Python bytecodes, so a stage stops within one kernel launch or one
    library call of its limit; cleanup in `finally` blocks (hooks, attention implementation) still runs.
    """

    def expire(_signum, _frame) -> None:
        raise StageTimeout(f"stopped at its {seconds:.3g} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def format_figure(value: Figure) -> str:
    if isinstance(value, str):
        return value
    if not math.isfinite(value) or value == int(value) and abs(value) < 1e6:
        return f"{value:g}"
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.3e}"


class StageRunner:
    """Runs stages in order within one overall limit and keeps their figures and records."""

    def __init__(self, total_limit_s: float, margin_s: float = 5.0) -> None:
        self.started = time.monotonic()
        self.total_limit_s = total_limit_s
        self.margin_s = margin_s  # kept free at the end for the table and the JSON file
        self.figures: dict[str, Figure] = {}
        self.records: list[StageRecord] = []

    def remaining_s(self) -> float:
        return self.total_limit_s - self.margin_s - (time.monotonic() - self.started)

    def run(
        self, name: str, limit_s: float, figure_names: Sequence[str], measure: Callable[[float], Measured]
    ) -> Measured | None:
        """Run `measure(deadline)` (deadline on `time.monotonic()`), within min(limit_s, time left overall)."""
        value = self.call(name, limit_s, measure, figure_names)
        if value is not None:
            for line in value.notes:
                print(f"  {line}", flush=True)
            missing = [f for f in figure_names if f not in value.figures]
            if missing:
                self._fail_figures(missing, f"error: stage {name} did not report {', '.join(missing)}")
            for figure in figure_names:
                if figure in value.figures:
                    self._report(figure, value.figures[figure])
            self.records[-1].details.update(value.details)
        return value

    def call(self, name: str, limit_s: float, fn: Callable[[float], T], figure_names: Sequence[str] = ()) -> T | None:
        """`fn(deadline)` under the stage's limit; None (figures set to errors) if it raised or ran out of time."""
        limit_s = min(limit_s, self.remaining_s())
        started = time.monotonic()
        print(f"[{started - self.started:6.1f} s] {name} (limit {limit_s:.0f} s)", flush=True)
        error, value = None, None
        try:
            if limit_s <= 0:
                raise StageTimeout("no time left in the suite's overall limit")
            with time_limit(limit_s):
                value = fn(started + limit_s)
        except Exception as err:  # any failure is this stage's figure, not the end of the suite
            error = one_line(err)
            self._fail_figures(figure_names, f"error: {error}")
        wall_s = time.monotonic() - started
        self.records.append(StageRecord(name, limit_s, wall_s, error, {}))
        if error is not None:
            print(f"  {name} failed after {wall_s:.1f} s: {error}", flush=True)
        return value

    def skip(self, name: str, figure_names: Sequence[str], reason: str) -> None:
        self._fail_figures(figure_names, f"error: {reason}")
        self.records.append(StageRecord(name, 0.0, 0.0, reason, {}))

    def _fail_figures(self, figure_names: Sequence[str], text: str) -> None:
        for figure in figure_names:
            self._report(figure, text)

    def _report(self, figure: str, value: Figure) -> None:
        self.figures[figure] = value
        print(f"{figure}={format_figure(value)}", flush=True)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str  # stdout and stderr together
    ended_at_s: float  # epoch seconds when the command itself exited, before its stragglers were waited for


def run_command(
    command: Sequence[str], timeout_s: float, *, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None
) -> CommandResult:
    """Run `command` in a process group of its own, output captured, and end every process left in that
    group (Ray's daemons and workers included) when it returns, times out or is interrupted."""
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=max(timeout_s, 1))
        ended_at_s = time.time()
    except subprocess.TimeoutExpired as err:
        program = " ".join(Path(part).name for part in command[:2])
        raise StageTimeout(f"{program} did not finish within {timeout_s:.0f} s") from err
    finally:
        # a finished command gets a moment for its stragglers to follow it; one still running is stopped now
        _end_group(process.pid, grace_s=3.0 if process.poll() is not None else 0.0)
        process.wait()
    return CommandResult(process.returncode, output or "", ended_at_s)


def _end_group(pgid: int, grace_s: float) -> None:
    """Kill what is left of process group `pgid` after `grace_s`; it is a child's own (start_new_session)."""
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
