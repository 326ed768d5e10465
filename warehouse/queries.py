"""Named read-only queries returning Polars frames; each opens the warehouse for one query and closes it.

The analyses themselves are SQL macros and views stored in the warehouse (warehouse/sql/analysis.sql),
so `dynamics sql` users and these helpers get the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from dynamics.errors import InputError
from warehouse.db import LOCK_TIMEOUT_S, connect_read, first_line

TOP_FRACTION = 0.02  # "top heads" = top 2 % (docs/methods.md, "Top sets")


def query(
    path: str | Path, sql: str, params: Sequence | dict | None = None, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> pl.DataFrame:
    """Run one read-only SQL statement (values bound from `params`) and return its rows.

    A statement that returns no rows gives an empty frame; bad SQL raises a one-line ValueError
    carrying DuckDB's message.

    Example: `query(db, "SELECT * FROM head_scores WHERE model = ? AND metric = 'induction'", [model])`
    """
    if not sql or not sql.strip():
        raise InputError("no SQL given; pass a statement such as 'SELECT * FROM checkpoints'")
    with connect_read(path, lock_timeout_s) as con:
        try:
            relation = con.sql(sql, params=params)
            return pl.DataFrame() if relation is None else relation.pl()
        except duckdb.Error as err:
            raise InputError(f"query failed on {path}: {first_line(err)}") from err


def head_trajectories(path: str | Path, model: str | None = None, top_fraction: float = TOP_FRACTION) -> pl.DataFrame:
    """Per (model, settings_hash, step, layer, head): induction and FV scores, their percentiles and ranks
    among the step's heads, and membership of each top-`top_fraction` set."""
    _check_fraction(top_fraction)
    return _filtered(path, "head_trajectories(top_fraction := ?)", [top_fraction], model,
                     order="model, settings_hash, step, layer, head")


def head_set_membership(path: str | Path, model: str | None = None, top_fraction: float = TOP_FRACTION) -> pl.DataFrame:
    """Per head: the steps it entered and left the induction and FV top sets, its peak induction
    percentile, final scores, and the `induction_then_fv` flag."""
    _check_fraction(top_fraction)
    return _filtered(path, "head_set_membership(top_fraction := ?)", [top_fraction], model,
                     order="model, settings_hash, layer, head")


def induction_to_fv_transitions(
    path: str | Path, top_fraction: float = TOP_FRACTION, model: str | None = None
) -> pl.DataFrame:
    """Heads in the FV top set at the final step that were in the induction top set at an earlier step.

    Example: `induction_to_fv_transitions(db)` → one row per such head, with `induction_entered_step`,
    `induction_left_step`, `fv_entered_step`, percentiles and the `top_fraction` used.
    """
    _check_fraction(top_fraction)
    return _filtered(path, "induction_to_fv_transitions(top_fraction := ?)", [top_fraction], model,
                     order="model, settings_hash, layer, head")


def head_dimensionality(path: str | Path, top_fraction: float = TOP_FRACTION) -> pl.DataFrame:
    """Per model: d_head, d_model, n_heads and the max, top-set mean and mean of its induction and FV
    scores at the final step."""
    _check_fraction(top_fraction)
    return query(path, "SELECT * FROM head_dimensionality(top_fraction := ?) ORDER BY d_head, model",
                 [top_fraction])


def head_dimensionality_correlations(path: str | Path, top_fraction: float = TOP_FRACTION) -> pl.DataFrame:
    """Per (metric, statistic): Pearson and Spearman correlation with d_head across models (null below 3)."""
    _check_fraction(top_fraction)
    return query(path, "SELECT * FROM head_dimensionality_correlations(top_fraction := ?) ORDER BY metric, statistic",
                 [top_fraction])


def phase_change(path: str | Path, model: str | None = None) -> pl.DataFrame:
    """Long frame (model, settings_hash, step, tokens, metric, value) of each checkpoint's model-level
    metrics plus 'max_induction', the strongest induction head at that step."""
    return _filtered(path, "phase_change", [], model, order="model, settings_hash, metric, step")


def head_map(path: str | Path, model: str, metric: str, settings_hash: str | None = None) -> pl.DataFrame:
    """(settings_hash, step, layer, head, value, flag) of one head metric of one model, for heat maps."""
    sql = ("SELECT settings_hash, step, layer, head, value, flag FROM head_scores WHERE model = ? AND metric = ?"
           + (" AND settings_hash = ?" if settings_hash is not None else "")
           + " ORDER BY settings_hash, step, layer, head")
    params = [model, metric] + ([settings_hash] if settings_hash is not None else [])
    frame = query(path, sql, params)
    if frame.is_empty():
        metrics = query(path, "SELECT DISTINCT metric FROM head_scores WHERE model = ? ORDER BY metric", [model])
        raise InputError(f"no {metric!r} scores of model {model!r} in {path}; "
                         f"its metrics are {metrics['metric'].to_list() or 'none (model not scored)'}")
    return frame


def final_step(path: str | Path, model: str, settings_hash: str | None = None) -> int:
    """The last step of `model` scored with status 'ok' (with `settings_hash`, if given)."""
    sql = "SELECT max(final_step) AS step FROM final_steps WHERE model = ?"
    params = [model]
    if settings_hash is not None:
        sql += " AND settings_hash = ?"
        params.append(settings_hash)
    step = query(path, sql, params)["step"][0]
    if step is None:
        models = query(path, "SELECT DISTINCT model FROM final_steps ORDER BY model")["model"].to_list()
        raise InputError(f"model {model!r} has no scored checkpoint in {path}; scored models: {models or 'none'}")
    return int(step)


def _filtered(path: str | Path, source: str, params: list, model: str | None, order: str) -> pl.DataFrame:
    # `source` and `order` are fixed strings from this module; only values are bound
    where = " WHERE model = ?" if model is not None else ""
    return query(path, f"SELECT * FROM {source}{where} ORDER BY {order}",
                 params + ([model] if model is not None else []))


def _check_fraction(top_fraction: float) -> None:
    if not 0 < top_fraction <= 1:
        raise InputError(f"top_fraction must be in (0, 1] (got {top_fraction}); 0.02 means the top 2 % of heads")
