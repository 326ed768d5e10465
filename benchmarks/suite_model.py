"""Per-checkpoint figures of one model shape: FV scoring at the reference protocol (the fast path, the
reference loop on a subsample, the gap to the compute-bound limit) and the induction probe.

Everything is timed on a model already on the device, after a warm-up on a small slice, so one-off costs
(kernel selection, allocator growth) stay out of the per-checkpoint figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from benchmarks.fv_limit import (
    FvTiming,
    Throughput,
    compute_bound_s,
    count_fv_work,
    describe_work,
    measure_throughput,
    time_function_vectors,
)
from benchmarks.fv_scoring import max_difference, prompt_subset, timed
from benchmarks.suite_runner import Measured
from dynamics.adapters import LoadedModel
from dynamics.scorers.function_vectors import FunctionVectorConfig, score_function_vectors, score_function_vectors_reference
from dynamics.scorers.induction import InductionConfig, score_induction
from dynamics.tasks.prompts import PromptSet

PLAN_SHARE = 0.85  # of the time left in the stage, what the FV run may be planned to take (a margin for the estimate)


@dataclass(frozen=True)
class FvProtocol:
    """How one shape's FV figures are measured."""

    config: FunctionVectorConfig
    oracle_trials: int = 1  # corrupted prompts the reference loop is timed on (1 + L·H batch-1 forwards each)
    throughput_batch: int = 64
    throughput_length: int = 80
    throughput_repeats: int = 5


@dataclass(frozen=True)
class OracleTiming:
    seconds: float
    trials: int
    forwards: int  # batch-1 forwards it ran
    max_abs_diff: float  # against the fast path on the same trials and means


def fv_figure_names(label: str) -> tuple[str, ...]:
    return (f"fv_s_{label}", f"fv_oracle_ratio_{label}", f"fv_reference_h_{label}", f"fv_limit_fraction_{label}")


def induction_figure_names(label: str) -> tuple[str, ...]:
    return (f"induction_s_{label}",)


@dataclass(frozen=True)
class FvMeasurement:
    """One shape's FV timings, before they are turned into per-checkpoint figures."""

    dtype: str
    n_layers: int
    n_heads: int
    measured: PromptSet  # the tasks timed: all, or the first that fitted the stage's limit
    scale: float  # all tasks ÷ tasks timed
    trials: int  # corrupted prompts of all tasks
    timing: FvTiming
    oracle: OracleTiming
    throughput: Throughput


def measure_function_vectors(
    model: LoadedModel, prompts: PromptSet, protocol: FvProtocol, label: str, deadline: float
) -> Measured:
    """FV seconds per checkpoint for `prompts` (all tasks if they fit before `deadline`, else the first
    tasks that do, scaled linearly), the reference loop's time scaled from `protocol.oracle_trials`
    trials, and the fraction of the compute-bound limit reached."""
    batch = protocol.config.batch_size
    throughput = measure_throughput(model, protocol.throughput_batch, protocol.throughput_length, protocol.throughput_repeats)
    warmup = prompt_subset(prompts, 1, batch, batch)
    time_function_vectors(model, warmup, protocol.config)
    warm = time_function_vectors(model, warmup, protocol.config)
    oracle = time_oracle(model, prompts, warm, protocol)
    n_tasks = tasks_that_fit(estimated_task_seconds(model, prompts, warmup, warm, throughput), deadline)
    measured = prompt_subset(prompts, n_tasks)
    timing = time_function_vectors(model, measured, protocol.config)
    return fv_figures(label, FvMeasurement(
        dtype=str(model.dtype).removeprefix("torch."), n_layers=model.n_layers, n_heads=model.n_heads,
        measured=measured, scale=len(prompts.tasks) / n_tasks, trials=sum(len(t.corrupted) for t in prompts.tasks),
        timing=timing, oracle=oracle, throughput=throughput,
    ))


def fv_figures(label: str, m: FvMeasurement) -> Measured:
    """Per-checkpoint figures (the timed tasks scaled to all), with the numbers behind them."""
    fv_s, scores_s = m.timing.total_s * m.scale, m.timing.scores_s * m.scale
    reference_s = m.oracle.seconds / m.oracle.trials * m.trials
    work = count_fv_work(m.measured, m.n_layers, m.n_heads)
    limit_s = compute_bound_s(work, m.throughput)
    figures = {
        f"fv_s_{label}": fv_s,
        f"fv_oracle_ratio_{label}": reference_s / scores_s,
        f"fv_reference_h_{label}": reference_s / 3600,
        f"fv_limit_fraction_{label}": limit_s / m.timing.total_s,
    }
    n_tasks = len(m.measured.tasks)
    timed_tasks = (f"all {n_tasks} tasks timed" if m.scale == 1 else
                   f"{n_tasks} tasks timed, scaled ×{m.scale:.2f}: all did not fit the stage's limit")
    notes = [
        f"FV: {fv_s:.2f} s per checkpoint ({timed_tasks}): mean activations {m.timing.means_s * m.scale:.2f} s + "
        f"indirect effects {scores_s:.2f} s, {m.dtype}, scores finite: {m.timing.scores.is_finite()}",
        f"reference loop: {m.oracle.trials} trial(s) = {m.oracle.forwards} batch-1 forwards in {m.oracle.seconds:.2f} s "
        f"({1e3 * m.oracle.seconds / m.oracle.forwards:.1f} ms each) → {reference_s / 3600:.2f} h for {m.trials} "
        f"trials; indirect effects {reference_s / scores_s:,.0f}× faster; max |fast − reference| on those trials "
        f"{m.oracle.max_abs_diff:.2e}",
        describe_work(work, m.throughput, limit_s).replace("\n", "\n  ")
        + f" = {limit_s / m.timing.total_s:.3f} of the FV time ({m.timing.total_s:.3f} s on the same prompts)",
    ]
    details = {
        "tasks_timed": n_tasks, "scale": m.scale, "means_s": m.timing.means_s * m.scale, "scores_s": scores_s,
        "scores_finite": m.timing.scores.is_finite(), "oracle_measured_s": m.oracle.seconds,
        "oracle_trials": m.oracle.trials, "oracle_forwards": m.oracle.forwards, "reference_s": reference_s,
        "max_abs_diff": m.oracle.max_abs_diff, "token_forwards_per_checkpoint": work.token_forwards * m.scale,
        "minimal_token_forwards_per_checkpoint": work.minimal_token_forwards * m.scale,
        "unembedding_rows_per_checkpoint": work.unembedding_rows * m.scale,
        "tokens_per_s": m.throughput.tokens_per_s, "unembedding_rows_per_s": m.throughput.unembedding_rows_per_s,
        "compute_bound_s_per_checkpoint": limit_s * m.scale, "dtype": m.dtype,
    }
    return Measured(figures, details, notes)


def time_oracle(model: LoadedModel, prompts: PromptSet, warm: FvTiming, protocol: FvProtocol) -> OracleTiming:
    """The reference loop on the first `protocol.oracle_trials` corrupted prompts of the first task, with
    the warm-up's means; the fast path scores the same trials for the difference."""
    trials = prompt_subset(prompts, 1, protocol.config.batch_size, protocol.oracle_trials)
    means = warm.scores.means  # (1, layer, head, d_head): the first task's, from the warm-up's clean prompts
    reference, seconds = timed(lambda: score_function_vectors_reference(model, trials, means), model.device)
    fast = score_function_vectors(model, trials, means, protocol.config)
    n_trials = len(trials.tasks[0].corrupted)
    forwards = n_trials * (1 + model.n_layers * model.n_heads)
    return OracleTiming(seconds, n_trials, forwards, max_difference(fast, reference))


def estimated_task_seconds(
    model: LoadedModel, prompts: PromptSet, warmup: PromptSet, warm: FvTiming, throughput: Throughput
) -> list[float]:
    """Each task's FV seconds: its compute-bound time times the warm-up's (time ÷ compute-bound time), so
    longer prompts and the per-prompt patched rows are both weighed as the fast path weighs them."""
    slowdown = warm.total_s / compute_bound_s(count_fv_work(warmup, model.n_layers, model.n_heads), throughput)
    works = [count_fv_work(PromptSet(tasks=(task,), seed=prompts.seed), model.n_layers, model.n_heads) for task in prompts.tasks]
    return [slowdown * compute_bound_s(work, throughput) for work in works]


def tasks_that_fit(task_seconds: Sequence[float], deadline: float) -> int:
    """How many of the first tasks, at `task_seconds` each, can be scored in PLAN_SHARE of the time left
    before `deadline`; at least one."""
    available_s = PLAN_SHARE * (deadline - time.monotonic())
    fitting = 0
    while fitting < len(task_seconds) and sum(task_seconds[: fitting + 1]) <= available_s:
        fitting += 1
    return max(fitting, 1)


def measure_induction(model: LoadedModel, probe: Tensor, config: InductionConfig, label: str) -> Measured:
    """The induction probe's seconds per checkpoint (all four metrics, the scorer's own eager-attention pass)."""
    score_induction(model, probe[: 2 * config.batch_size], config)  # warm-up: eager attention's kernels, allocator
    _, seconds = timed(lambda: score_induction(model, probe, config), model.device)
    note = (f"induction probe: {probe.shape[0]} sequences of {probe.shape[1]} tokens, {config.batch_size} per pass, "
            f"{model.dtype}: {seconds:.2f} s")
    return Measured({f"induction_s_{label}": seconds}, {"induction_s": seconds, "sequences": probe.shape[0]}, [note])
