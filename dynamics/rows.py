"""Score tensors to long-format Polars frames whose columns match `warehouse/schema.sql`.

A non-finite score is never stored as a number: its `value` is null and `flag` says 'non_finite'. Head
scores carry their standard error in `stderr` (null where it is undefined or not finite).
"""

from __future__ import annotations

import math

import polars as pl
import torch

from dynamics.provenance import Provenance
from dynamics.scorers.estimates import HeadScores

HEAD_METRICS = ("induction", "prev_token", "duplicate_token", "copying", "fv")


def _value_and_flag(value: float) -> tuple[float | None, str | None]:
    return (value, None) if math.isfinite(value) else (None, "non_finite")


def _head_records(scores: HeadScores, extra: dict) -> list[dict]:
    records = []
    for metric, tensor in scores.values.items():
        values = tensor.detach().to(torch.float64).cpu()
        stderr = scores.stderr[metric].detach().to(torch.float64).cpu()
        n_layers, n_heads = values.shape
        for layer in range(n_layers):
            for head in range(n_heads):
                value, flag = _value_and_flag(float(values[layer, head]))
                error = float(stderr[layer, head])
                records.append({**extra, "layer": layer, "head": head, "metric": metric, "value": value, "flag": flag,
                                "stderr": error if math.isfinite(error) else None})
    return records


_HEAD_SCHEMA = {
    "layer": pl.Int32, "head": pl.Int32, "metric": pl.Utf8, "value": pl.Float64, "flag": pl.Utf8, "stderr": pl.Float64,
}
_PROVENANCE_SCHEMA = {
    "model": pl.Utf8, "revision": pl.Utf8, "step": pl.Int64, "weights_sha256": pl.Utf8, "dtype": pl.Utf8,
    "attn_impl": pl.Utf8, "settings_hash": pl.Utf8, "code_version": pl.Utf8,
}


def head_score_rows(scores: HeadScores, provenance: Provenance) -> pl.DataFrame:
    """One row per (layer, head, metric) from per-metric (layer, head) scores and standard errors."""
    schema = {**_PROVENANCE_SCHEMA, **_HEAD_SCHEMA}
    return pl.DataFrame(_head_records(scores, provenance.columns()), schema=schema)


def head_task_score_rows(per_task: dict[str, HeadScores], provenance: Provenance) -> pl.DataFrame:
    """One row per (layer, head, task, metric) from {task: per-metric (layer, head) scores and standard errors}."""
    records = []
    for task, scores in per_task.items():
        records += _head_records(scores, {**provenance.columns(), "task": task})
    schema = {**_PROVENANCE_SCHEMA, "task": pl.Utf8, **_HEAD_SCHEMA}
    return pl.DataFrame(records, schema=schema)


def checkpoint_metric_rows(metrics: dict[str, float], provenance: Provenance) -> pl.DataFrame:
    """One row per model-level metric of a checkpoint."""
    records = []
    for metric, raw in metrics.items():
        value, flag = _value_and_flag(float(raw))
        records.append({**provenance.columns(), "metric": metric, "value": value, "flag": flag})
    schema = {**_PROVENANCE_SCHEMA, "metric": pl.Utf8, "value": pl.Float64, "flag": pl.Utf8}
    return pl.DataFrame(records, schema=schema)
