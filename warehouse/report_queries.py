"""Aggregated read-only queries behind the HTML report (reports/report.py); each returns a small Polars frame.

Every query reads one *scoring setup* per model: among the model's settings hashes with status-'ok'
checkpoints, the one scored most recently (latest `checkpoints.scored_at`, ties broken by hash). Older
setups stay in the warehouse but are not charted; `report_models` says how many a model has. Only
checkpoints with status 'ok' are read.

"Top heads" here are the k highest-scoring heads of a step, k = max(min_top_heads, ceil(top_fraction · N))
for a model with N heads, ranked with ties broken by layer then head (as warehouse/sql/analysis.sql does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from dynamics.errors import InputError
from warehouse.queries import query

# (model, settings_hash) charted per model: the most recently scored setup with 'ok' checkpoints.
_CHOSEN_SQL = """
chosen AS (
    SELECT model, settings_hash, n_settings
    FROM (
        SELECT model, settings_hash,
               row_number() OVER (PARTITION BY model ORDER BY max(scored_at) DESC, settings_hash) AS pick,
               count(*) OVER (PARTITION BY model) AS n_settings
        FROM checkpoints
        WHERE status = 'ok'
        GROUP BY model, settings_hash
    )
    WHERE pick = 1
), ok AS (
    SELECT c.model, c.settings_hash, c.step, c.tokens
    FROM checkpoints c JOIN chosen USING (model, settings_hash)
    WHERE c.status = 'ok'
)"""

# Induction and FV side by side per (model, step, head) of the chosen setups, with each step's rank
# of every head and that step's top-set size k. Parameters: min_top_heads, top_fraction.
_RANKED_SQL = _CHOSEN_SQL + """, wide AS (
    SELECT h.model, h.step, h.layer, h.head,
           max(h.value) FILTER (WHERE h.metric = 'induction') AS induction,
           max(h.value) FILTER (WHERE h.metric = 'fv') AS fv
    FROM head_scores h JOIN ok USING (model, settings_hash, step)
    WHERE h.metric IN ('induction', 'fv') {model_filter}
    GROUP BY h.model, h.step, h.layer, h.head
), ranked AS (
    SELECT *,
           row_number() OVER (PARTITION BY model, step ORDER BY induction DESC NULLS LAST, layer, head) AS induction_rank,
           row_number() OVER (PARTITION BY model, step ORDER BY fv DESC NULLS LAST, layer, head) AS fv_rank,
           greatest(?, ceil(round(? * count(*) OVER (PARTITION BY model, step), 9)))::INTEGER AS top_k,
           max(step) OVER (PARTITION BY model) AS final_step
    FROM wide
), flagged AS (
    SELECT *,
           induction IS NOT NULL AND induction_rank <= top_k AS in_induction_top,
           fv IS NOT NULL AND fv_rank <= top_k AS in_fv_top
    FROM ranked
)"""


def report_models(path: str | Path) -> pl.DataFrame:
    """One row per scored model: the settings hash charted, how many setups it has, its step range and shape.

    Columns: model, settings_hash, n_settings, n_steps, first_step, final_step, steps (list), family, n_layers,
    n_heads (per layer), d_head, d_model, n_params. Shape columns fall back to what head_scores shows
    when the models row is missing (d_head then stays null).
    """
    sql = "WITH " + _CHOSEN_SQL + """, shape AS (
        SELECT h.model, max(h.layer) + 1 AS n_layers, max(h.head) + 1 AS n_heads
        FROM head_scores h JOIN chosen USING (model, settings_hash)
        GROUP BY h.model
    )
    SELECT ch.model, ch.settings_hash, ch.n_settings,
           count(*) AS n_steps, min(ok.step) AS first_step, max(ok.step) AS final_step,
           list(ok.step ORDER BY ok.step) AS steps,
           any_value(m.family) AS family,
           coalesce(any_value(m.n_layers), any_value(s.n_layers)) AS n_layers,
           coalesce(any_value(m.n_heads), any_value(s.n_heads)) AS n_heads,
           any_value(m.d_head) AS d_head, any_value(m.d_model) AS d_model, any_value(m.n_params) AS n_params
    FROM chosen ch
    JOIN ok USING (model, settings_hash)
    LEFT JOIN models m USING (model)
    LEFT JOIN shape s USING (model)
    GROUP BY ch.model, ch.settings_hash, ch.n_settings
    ORDER BY ch.model"""
    return query(path, sql)


def metric_inventory(path: str | Path) -> pl.DataFrame:
    """Which metrics each model has: (model, source, metric, n_steps) for the chosen setups.

    source is 'head_scores', 'checkpoint_metrics' or 'ablations' (ablations of any setup: ablation
    runs may use their own settings). Only finite values count.
    """
    sql = "WITH " + _CHOSEN_SQL + """
    SELECT model, 'head_scores' AS source, metric, count(DISTINCT step) AS n_steps
    FROM head_scores JOIN ok USING (model, settings_hash, step)
    WHERE value IS NOT NULL GROUP BY model, metric
    UNION ALL
    SELECT model, 'checkpoint_metrics', metric, count(DISTINCT step)
    FROM checkpoint_metrics JOIN ok USING (model, settings_hash, step)
    WHERE value IS NOT NULL GROUP BY model, metric
    UNION ALL
    SELECT model, 'ablations', metric, count(DISTINCT step)
    FROM ablations WHERE value IS NOT NULL GROUP BY model, metric
    ORDER BY model, source, metric"""
    return query(path, sql)


def phase_change_curves(path: str | Path, model: str | None = None) -> pl.DataFrame:
    """Long frame (model, step, tokens, metric, value): every model-level metric of each checkpoint plus
    'max_induction', the strongest head's induction score at that step. Non-finite values are left out."""
    model_filter, params = _model_filter("cm", model)
    head_filter, head_params = _model_filter("h", model)
    sql = "WITH " + _CHOSEN_SQL + f"""
    SELECT cm.model, cm.step, ok.tokens, cm.metric, cm.value
    FROM checkpoint_metrics cm JOIN ok USING (model, settings_hash, step)
    WHERE cm.value IS NOT NULL {model_filter}
    UNION ALL
    SELECT h.model, h.step, any_value(ok.tokens), 'max_induction', max(h.value)
    FROM head_scores h JOIN ok USING (model, settings_hash, step)
    WHERE h.metric = 'induction' AND h.value IS NOT NULL {head_filter}
    GROUP BY h.model, h.step
    ORDER BY 1, 4, 2"""
    return query(path, sql, params + head_params)


def head_map_scores(path: str | Path, model: str, steps: Sequence[int]) -> pl.DataFrame:
    """(model, step, layer, head, induction, fv) of one model at the given steps, for heat maps.

    A metric the model was not scored for comes back as a null column value.
    """
    if not steps:
        return pl.DataFrame()
    sql = "WITH " + _CHOSEN_SQL + """
    SELECT h.model, h.step, h.layer, h.head,
           max(h.value) FILTER (WHERE h.metric = 'induction') AS induction,
           max(h.value) FILTER (WHERE h.metric = 'fv') AS fv
    FROM head_scores h JOIN ok USING (model, settings_hash, step)
    WHERE h.model = ? AND h.metric IN ('induction', 'fv') AND list_contains(?, h.step)
    GROUP BY h.model, h.step, h.layer, h.head
    ORDER BY h.step, h.layer, h.head"""
    return query(path, sql, [model, [int(s) for s in steps]])


def final_head_scores(path: str | Path, model: str | None = None, top_fraction: float = 0.02,
                      min_top_heads: int = 3) -> pl.DataFrame:
    """Every head at its model's final step: (model, step, layer, head, induction, fv, induction_rank,
    fv_rank, top_k, in_induction_top, in_fv_top)."""
    sql, params = _ranked(model, top_fraction, min_top_heads)
    return query(path, sql + """
    SELECT model, step, layer, head, induction, fv, induction_rank, fv_rank, top_k, in_induction_top, in_fv_top
    FROM flagged WHERE step = final_step ORDER BY model, layer, head""", params)


def top_head_trajectories(path: str | Path, model: str, top_fraction: float = 0.02, min_top_heads: int = 3,
                          min_induction: float = 0.0) -> pl.DataFrame:
    """Scores over all steps of the heads in the final induction or final FV top set of one model.

    A head counts as an induction head at a step when it is in that step's induction top set with a
    score of at least `min_induction`: early in training every top set is noise, so without a floor
    almost any head of a small model was "in the induction top set at some step".

    Columns: model, step, layer, head, induction, fv, final_induction_top, final_fv_top,
    induction_then_fv (in the final FV top set and an induction head at some earlier step),
    first_induction_step (first step it was an induction head), top_k.
    """
    sql, params = _ranked(model, top_fraction, min_top_heads)
    return query(path, sql + """, per_head AS (
        SELECT model, layer, head,
               bool_or(in_induction_top) FILTER (WHERE step = final_step) AS final_induction_top,
               bool_or(in_fv_top) FILTER (WHERE step = final_step) AS final_fv_top,
               coalesce(bool_or(in_induction_top AND induction >= ?) FILTER (WHERE step < final_step),
                        false) AS induction_head_before,
               min(step) FILTER (WHERE in_induction_top AND induction >= ?) AS first_induction_step
        FROM flagged GROUP BY model, layer, head
    )
    SELECT f.model, f.step, f.layer, f.head, f.induction, f.fv,
           p.final_induction_top, p.final_fv_top, p.final_fv_top AND p.induction_head_before AS induction_then_fv,
           p.first_induction_step, f.top_k
    FROM flagged f JOIN per_head p USING (model, layer, head)
    WHERE p.final_induction_top OR p.final_fv_top
    ORDER BY f.layer, f.head, f.step""", params + [min_induction, min_induction])


def head_strength(path: str | Path, top_fraction: float = 0.02, min_top_heads: int = 3) -> pl.DataFrame:
    """Per (model, metric) at the model's final step: the strongest head ('max'), the mean of the top-k
    heads ('top_mean') and the mean over all heads ('mean'), in long form with the model's d_head.

    Columns: model, d_head, n_heads_total, final_step, metric, statistic, value, top_k.
    """
    sql, params = _ranked(None, top_fraction, min_top_heads)
    return query(path, sql + """, final AS (SELECT * FROM flagged WHERE step = final_step), stats AS (
        SELECT model, any_value(step) AS final_step, count(*) AS n_heads_total, any_value(top_k) AS top_k,
               'induction' AS metric, max(induction) AS "max",
               avg(induction) FILTER (WHERE in_induction_top) AS top_mean, avg(induction) AS mean
        FROM final GROUP BY model HAVING count(induction) > 0
        UNION ALL
        SELECT model, any_value(step), count(*), any_value(top_k),
               'fv', max(fv), avg(fv) FILTER (WHERE in_fv_top), avg(fv)
        FROM final GROUP BY model HAVING count(fv) > 0
    )
    SELECT s.model, m.d_head, s.n_heads_total, s.final_step, s.metric, u.statistic, u.value, s.top_k
    FROM stats s
    LEFT JOIN models m USING (model)
    CROSS JOIN LATERAL (VALUES ('max', s."max"), ('top_mean', s.top_mean), ('mean', s.mean)) u(statistic, value)
    ORDER BY s.metric, u.statistic, m.d_head, s.model""", params)


def ablation_curves(path: str | Path, model: str | None = None) -> pl.DataFrame:
    """Few-shot accuracy under head ablation, averaged over tasks, one setup per model.

    Per model the curves come from one (step, settings hash): the charted hash's latest ablated step when
    that hash has ablations, else the latest ablated step (alphabetically first hash there); metric 'f1'
    if present else 'top1', and method 'mean' if present else 'zero'. A fraction >= 1 (a head count) becomes a fraction
    of the model's heads. The clean run (fraction 0, no exclusion) is repeated as the first point of
    the with-exclusion curve, which the reference grid does not run at 0.

    Columns: model, step, settings_hash, method, metric, ranking, exclusion, fraction, value, n_tasks.
    """
    model_filter, params = _model_filter("a", model)
    sql = "WITH " + _CHOSEN_SQL + f""", rows AS (
        SELECT a.*, ch.settings_hash IS NOT NULL AS charted
        FROM ablations a LEFT JOIN chosen ch USING (model, settings_hash)
        WHERE a.value IS NOT NULL AND a.metric IN ('f1', 'top1') {model_filter}
    ), pick AS (
        SELECT model,
               first(step ORDER BY charted DESC, step DESC, settings_hash) AS step,
               first(settings_hash ORDER BY charted DESC, step DESC, settings_hash) AS settings_hash,
               CASE WHEN bool_or(metric = 'f1') THEN 'f1' ELSE 'top1' END AS metric,
               CASE WHEN bool_or(method = 'mean') THEN 'mean' ELSE 'zero' END AS method
        FROM rows GROUP BY model
    ), curves AS (
        SELECT r.model, r.step, r.settings_hash, r.method, r.metric, r.ranking, r.exclusion,
               CASE WHEN r.fraction >= 1 THEN r.fraction / (m.n_layers * m.n_heads) ELSE r.fraction END AS fraction,
               avg(r.value) AS value, count(DISTINCT r.task) AS n_tasks
        FROM rows r JOIN pick p USING (model, step, settings_hash, metric, method)
        LEFT JOIN models m USING (model)
        GROUP BY ALL
    )
    SELECT * FROM curves
    UNION ALL
    SELECT model, step, settings_hash, method, metric, ranking, true, fraction, value, n_tasks
    FROM curves c
    WHERE NOT exclusion AND fraction = 0 AND EXISTS (
        SELECT 1 FROM curves e WHERE e.model = c.model AND e.ranking = c.ranking AND e.exclusion)
      AND NOT EXISTS (
        SELECT 1 FROM curves e WHERE e.model = c.model AND e.ranking = c.ranking AND e.exclusion AND e.fraction = 0)
    ORDER BY model, ranking, exclusion, fraction"""
    return query(path, sql, params)


def _ranked(model: str | None, top_fraction: float, min_top_heads: int) -> tuple[str, list]:
    """The ranking CTEs (ending with `flagged`) and their parameters, optionally for one model."""
    if not 0 < top_fraction <= 1:
        raise InputError(f"top_fraction must be in (0, 1] (got {top_fraction}); 0.02 means the top 2 % of heads")
    if min_top_heads < 1:
        raise InputError(f"min_top_heads must be at least 1 (got {min_top_heads})")
    model_filter, params = _model_filter("h", model)
    return "WITH " + _RANKED_SQL.format(model_filter=model_filter), params + [min_top_heads, top_fraction]


def _model_filter(alias: str, model: str | None) -> tuple[str, list]:
    # `alias` is a fixed table alias of this module; the model name is bound as a value
    if model is None:
        return "", []
    return f"AND {alias}.model = ?", [model]
