"""Synthetic warehouses with plausible training dynamics, written straight into the real schema.

Each model gets an induction phase change at `onset_step` (a few induction heads rise, the ICL token
loss drops below zero, the training loss bends), a few FV heads that rise late, and one "transition
head" that is an induction head mid-training and the strongest FV head at the final step. Frames are
generated with numpy, then inserted with DuckDB through `warehouse.db.connect_write`, which applies the
schema and the analysis views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from dynamics.rows import HEAD_METRICS
from warehouse.db import connect_write

CHECKPOINT_METRICS = ("train_loss", "icl_token_loss", "loss_early", "loss_late")
PYTHIA_STEPS = (0, *(2**i for i in range(10)), *range(1000, 143001, 1000))  # 154 revisions
SETTINGS_HASH = "settings-new"
STALE_SETTINGS_HASH = "settings-old"  # scored earlier; every induction score 0.99, so it shows if charted
ABLATION_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3)
# standard errors: a head with FV ≥ 6e-4 or induction ≥ 0.015 is significant at the default z = 3
STDERR = {"induction": 0.005, "fv": 2e-4}


@dataclass(frozen=True)
class SyntheticModel:
    """One model's shape, scored steps and which result kinds it has."""

    name: str
    n_layers: int
    n_heads: int
    d_head: int
    steps: tuple[int, ...]
    onset_step: int
    head_metrics: tuple[str, ...] = HEAD_METRICS
    checkpoint_metrics: tuple[str, ...] = CHECKPOINT_METRICS
    ablations: bool = False
    stale_settings: bool = False  # also write an older scoring setup that the report must ignore
    failed_step: int | None = None  # a checkpoint row with status 'failed' and no scores
    seed: int = 0  # of the generated scores; also models.seed when the model is one seed of a suite
    suite: str | None = None

    @property
    def top_k(self) -> int:
        """Top-set size of the analyses' defaults: max(1, ceil(2 % of heads))."""
        return max(1, math.ceil(round(0.02 * self.n_layers * self.n_heads, 9)))

    @property
    def transition_head(self) -> tuple[int, int]:
        """(layer, head) of the head that goes from induction to FV."""
        return (self.n_layers - 1, 0) if self.n_layers > 1 else (0, 0)


@dataclass(frozen=True)
class Dynamics:
    """Score arrays of one model, shaped (step, layer, head) or (step,)."""

    head: dict[str, np.ndarray] = field(default_factory=dict)
    checkpoint: dict[str, np.ndarray] = field(default_factory=dict)
    induction_heads: tuple[tuple[int, int], ...] = ()
    fv_heads: tuple[tuple[int, int], ...] = ()


def toy_suite(steps: Sequence[int] = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000)) -> list[SyntheticModel]:
    """Three small models with different d_head (for the dimensionality chart), one with ablations and
    a stale settings hash."""
    steps = tuple(steps)
    return [
        SyntheticModel("toy-d16", 2, 4, 16, steps, onset_step=64, ablations=True, stale_settings=True,
                       failed_step=steps[-1] + 1000, seed=1),
        SyntheticModel("toy-d32", 3, 4, 32, steps, onset_step=128, seed=2),
        SyntheticModel("toy-d64", 4, 8, 64, steps, onset_step=256, ablations=True, seed=3),
    ]


def pythia_like(name: str = "synthetic/pythia-6.9b") -> SyntheticModel:
    """A pythia-6.9b-sized model: 32 layers × 32 heads, d_head 128, all 154 steps, every metric."""
    return SyntheticModel(name, 32, 32, 128, PYTHIA_STEPS, onset_step=1000, ablations=True, seed=7)


def model_dynamics(model: SyntheticModel) -> Dynamics:
    """Plausible score trajectories for every head metric and model-level metric of `model`."""
    rng = np.random.default_rng(model.seed)
    S, L, H = len(model.steps), model.n_layers, model.n_heads
    log_step = np.log1p(np.asarray(model.steps, dtype=float))                     # (step,)
    onset = 1 / (1 + np.exp(-4 * (log_step - math.log1p(model.onset_step))))     # (step,), 0 -> 1
    late = 1 / (1 + np.exp(-4 * (log_step - math.log1p(model.steps[-1]) + 1.5)))  # (step,), rises last
    k = model.top_k
    transition = model.transition_head
    others = [(l, h) for l in range(L) for h in range(H) if (l, h) != transition]
    order = rng.permutation(len(others))
    induction_heads = tuple([transition] + [others[i] for i in order[: k - 1]])
    fv_heads = tuple([transition] + [others[i] for i in order[k - 1 : 2 * k - 2]])

    induction = rng.uniform(0.0, 0.05, (S, L, H))                                # (step, layer, head)
    for rank, (l, h) in enumerate(induction_heads):
        amplitude = 0.9 - 0.4 * rank / max(1, k - 1)
        induction[:, l, h] += amplitude * onset
    # the transition head loses its induction behaviour as its FV score rises
    induction[:, transition[0], transition[1]] *= 1 - 0.9 * late
    fv = rng.normal(0.0, 1e-4, (S, L, H))                                          # (step, layer, head)
    for rank, (l, h) in enumerate(fv_heads):
        fv[:, l, h] += (0.02 if (l, h) == transition else 0.012 - 0.004 * rank / max(1, k - 1)) * late
    head = {
        "induction": induction,
        "fv": fv,
        "prev_token": rng.uniform(0.0, 0.3, (S, L, H)),
        "duplicate_token": rng.uniform(0.0, 0.1, (S, L, H)),
        "copying": rng.uniform(-0.1, 0.4, (S, L, H)),
    }
    train_loss = 3.0 + 7.0 / (1 + np.asarray(model.steps) / 30) - 0.4 * onset + rng.normal(0, 0.01, S)
    icl = -0.6 * onset + rng.normal(0, 0.01, S)
    checkpoint = {"train_loss": train_loss, "icl_token_loss": icl, "loss_early": train_loss + 0.3,
                  "loss_late": train_loss + 0.3 + icl}
    return Dynamics(
        head={m: head[m] for m in model.head_metrics},
        checkpoint={m: checkpoint[m] for m in model.checkpoint_metrics},
        induction_heads=induction_heads,
        fv_heads=fv_heads,
    )


def build_warehouse(path: Path, models: Sequence[SyntheticModel]) -> dict[str, Dynamics]:
    """Write `models` into a new warehouse at `path`; returns each model's generated dynamics."""
    dynamics = {model.name: model_dynamics(model) for model in models}
    frames: dict[str, list[pl.DataFrame]] = {t: [] for t in ("models", "checkpoints", "head_scores",
                                                            "checkpoint_metrics", "ablations")}
    for model in models:
        frames["models"].append(_models_frame(model))
        settings = [(SETTINGS_HASH, datetime(2026, 1, 2), dynamics[model.name])]
        if model.stale_settings:
            stale = model_dynamics(model)
            stale.head["induction"][:] = 0.99
            settings.append((STALE_SETTINGS_HASH, datetime(2026, 1, 1), stale))
        for settings_hash, scored_at, dyn in settings:
            frames["checkpoints"].append(_checkpoints_frame(model, settings_hash, scored_at))
            frames["head_scores"].extend(_head_frame(model, settings_hash, m, v) for m, v in dyn.head.items())
            frames["checkpoint_metrics"].extend(
                _checkpoint_metric_frame(model, settings_hash, m, v) for m, v in dyn.checkpoint.items())
        if model.ablations:
            frames["ablations"].append(_ablations_frame(model))
    with connect_write(path) as con:
        for table, parts in frames.items():
            if parts:
                frame = pl.concat(parts, how="diagonal_relaxed")  # noqa: F841 (scanned by DuckDB below)
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")
    return dynamics


def _models_frame(model: SyntheticModel) -> pl.DataFrame:
    return pl.DataFrame({
        "model": [model.name], "family": ["gpt_neox"], "source": ["local"], "n_layers": [model.n_layers],
        "n_heads": [model.n_heads], "d_model": [model.n_heads * model.d_head], "d_head": [model.d_head],
        "suite": [model.suite], "seed": [model.seed if model.suite else None],
    }, schema_overrides={"suite": pl.Utf8, "seed": pl.Int32})


def _checkpoints_frame(model: SyntheticModel, settings_hash: str, scored_at: datetime) -> pl.DataFrame:
    steps = list(model.steps)
    frame = pl.DataFrame({
        "model": model.name, "step": steps, "settings_hash": settings_hash,
        "revision": [f"step{s}" for s in steps], "tokens": [s * 2_097_152 for s in steps], "status": "ok",
        "scored_at": [scored_at + timedelta(seconds=i) for i in range(len(steps))],
    })
    if model.failed_step is not None and settings_hash == SETTINGS_HASH:
        failed = pl.DataFrame({
            "model": [model.name], "step": [model.failed_step], "settings_hash": [settings_hash],
            "revision": [f"step{model.failed_step}"], "tokens": [None], "status": ["failed"],
            "error": ["CUDA out of memory"], "scored_at": [scored_at + timedelta(days=1)],
        })
        frame = pl.concat([frame, failed], how="diagonal_relaxed")
    return frame


def _head_frame(model: SyntheticModel, settings_hash: str, metric: str, values: np.ndarray) -> pl.DataFrame:
    S, L, H = values.shape
    step, layer, head = np.meshgrid(np.asarray(model.steps), np.arange(L), np.arange(H), indexing="ij")
    return pl.DataFrame({
        "model": model.name, "step": step.ravel(), "settings_hash": settings_hash, "layer": layer.ravel().astype(np.int32),
        "head": head.ravel().astype(np.int32), "metric": metric, "value": values.ravel(),
        "stderr": STDERR.get(metric),
    })


def _checkpoint_metric_frame(model: SyntheticModel, settings_hash: str, metric: str, values: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"model": model.name, "step": list(model.steps), "settings_hash": settings_hash,
                         "metric": metric, "value": values})


def _ablations_frame(model: SyntheticModel) -> pl.DataFrame:
    """Few-shot F1 at the final step: FV ablation hurts most, then induction, then random."""
    drop = {"fv": 2.0, "induction": 1.0, "random": 0.2}
    n_heads = model.n_layers * model.n_heads
    rows = []
    for ranking, slope in drop.items():
        for exclusion in (False, True):
            for fraction in ABLATION_FRACTIONS:
                if exclusion and fraction == 0:
                    continue  # the reference grid has no clean run with exclusion
                for task, base in (("antonym", 0.6), ("capitalize", 0.8)):
                    value = max(0.0, base - slope * fraction * (0.7 if exclusion else 1.0))
                    n_ablated = max(1, int(fraction * n_heads)) if fraction else 0  # as ablation_count
                    rows.append({"model": model.name, "step": model.steps[-1], "settings_hash": SETTINGS_HASH,
                                 "ranking": ranking, "fraction": fraction, "exclusion": exclusion,
                                 "method": "mean", "task": task, "metric": "f1", "value": value,
                                 "n_ablated": n_ablated})
    return pl.DataFrame(rows)
