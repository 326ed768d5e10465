"""Warehouse fixtures: a fresh warehouse path and builders of score frames shaped like dynamics.rows output."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

PROVENANCE = {"revision": "rev", "weights_sha256": "sha", "dtype": "float32", "attn_impl": "eager",
              "code_version": "test"}


def _value_flag(value: float) -> tuple[float | None, str | None]:
    return (value, None) if math.isfinite(value) else (None, "non_finite")


def build_head_rows(model: str, step: int, settings_hash: str, scores: dict[str, list[list[float]]],
                    task: str | None = None, stderr: dict[str, list[list[float]]] | float | None = None) -> pl.DataFrame:
    """Rows of head_scores (or head_task_scores with `task`) from {metric: scores[layer][head]}; `stderr` is
    one standard error for every score, or {metric: stderr[layer][head]}, or None (no standard errors)."""
    records = []
    for metric, grid in scores.items():
        for layer, row in enumerate(grid):
            for head, raw in enumerate(row):
                value, flag = _value_flag(raw)
                error = stderr[metric][layer][head] if isinstance(stderr, dict) else stderr
                records.append({"model": model, "step": step, "settings_hash": settings_hash, **PROVENANCE,
                                **({"task": task} if task is not None else {}),
                                "layer": layer, "head": head, "metric": metric, "value": value, "flag": flag,
                                "stderr": error})
    schema = {"model": pl.Utf8, "step": pl.Int64, "settings_hash": pl.Utf8, **{k: pl.Utf8 for k in PROVENANCE},
              **({"task": pl.Utf8} if task is not None else {}),
              "layer": pl.Int32, "head": pl.Int32, "metric": pl.Utf8, "value": pl.Float64, "flag": pl.Utf8,
              "stderr": pl.Float64}
    return pl.DataFrame(records, schema=schema)


def build_metric_rows(model: str, step: int, settings_hash: str, metrics: dict[str, float]) -> pl.DataFrame:
    """Rows of checkpoint_metrics from {metric: value}."""
    records = [{"model": model, "step": step, "settings_hash": settings_hash, "metric": metric,
                **dict(zip(("value", "flag"), _value_flag(value)))} for metric, value in metrics.items()]
    return pl.DataFrame(records, schema={"model": pl.Utf8, "step": pl.Int64, "settings_hash": pl.Utf8,
                                         "metric": pl.Utf8, "value": pl.Float64, "flag": pl.Utf8})


@pytest.fixture
def warehouse_path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse.duckdb"


@pytest.fixture(scope="session")
def head_rows() -> Callable[..., pl.DataFrame]:
    return build_head_rows


@pytest.fixture(scope="session")
def metric_rows() -> Callable[..., pl.DataFrame]:
    return build_metric_rows
