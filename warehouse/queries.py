"""Named read-only queries returning Polars frames; each opens the warehouse for one query and closes it.

The analyses themselves are SQL macros and views stored in the warehouse (warehouse/sql/analysis.sql, and
seeds.sql for seed comparisons);
every function here selects from one of them, so `dynamics sql` users, notebooks and the HTML report get
the same answers. `current=True` keeps each model's current setup only (the `current_setups` view: the
settings hash scored most recently), as the report does.

Example: `induction_to_fv_transitions("runs/warehouse.duckdb", z=2, top_fraction=0.05)`
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from dynamics.errors import InputError, first_line
from warehouse.db import LOCK_TIMEOUT_S, connect_read


@dataclass(frozen=True)
class Thresholds:
    """The analyses' parameters; the defaults are the SQL macros' (docs/methods.md, "Top sets", "Significance").

    A head is an induction (FV) head at a step when it is among the step's top `top_fraction` of heads
    (at least `min_top_heads`), scores at least the floor, and scores more than `z` standard errors.
    """

    top_fraction: float = 0.02
    min_top_heads: int = 1
    induction_floor: float = 0.25
    fv_floor: float = 0.001
    z: float = 3.0

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.top_fraction <= 1:
            problems.append(f"top_fraction must be in (0, 1] (got {self.top_fraction}); 0.02 means the top 2 % of heads")
        if isinstance(self.min_top_heads, bool) or not isinstance(self.min_top_heads, int) or self.min_top_heads < 1:
            problems.append(f"min_top_heads must be an integer of at least 1 (got {self.min_top_heads!r})")
        for name in ("induction_floor", "fv_floor", "z"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be at least 0 (got {getattr(self, name)})")
        if problems:
            raise InputError("; ".join(problems))

    @classmethod
    def of(cls, **overrides) -> Thresholds:
        """Defaults with `overrides`; an unknown name is refused with the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(overrides) - known):
            raise InputError(f"unknown threshold {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**overrides)

    def macro_arguments(self) -> tuple[str, list]:
        """'top_fraction := ?, …' and the values to bind, for calling an analysis macro."""
        fields = dataclasses.asdict(self)
        return ", ".join(f"{name} := ?" for name in fields), list(fields.values())

    def describe(self) -> str:
        """The rule in words, for report captions."""
        return (f"top {100 * self.top_fraction:g} % of heads (at least {self.min_top_heads}), scoring at least "
                f"{self.induction_floor:g} (induction) or {self.fv_floor:g} (FV) and more than {self.z:g} standard "
                "errors above zero")


def query(
    path: str | Path, sql: str, params: Sequence | dict | None = None, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> pl.DataFrame:
    """Run one read-only SQL statement (values bound from `params`) and return its rows.

    A statement that returns no rows gives an empty frame; bad SQL raises a one-line ValueError
    carrying DuckDB's message. The connection reaches no file but the warehouse (`warehouse.db.READ_ONLY_CONFIG`);
    several statements in one string are refused (DuckDB's parser counts them).

    Example: `query(db, "SELECT * FROM head_scores WHERE model = ? AND metric = 'induction'", [model])`
    """
    if not sql or not sql.strip():
        raise InputError("no SQL given; pass a statement such as 'SELECT * FROM checkpoints'")
    with connect_read(path, lock_timeout_s) as con:
        try:
            statements = con.extract_statements(sql)
            if len(statements) != 1:
                raise InputError(f"pass one SQL statement at a time (got {len(statements)}); run them one by one")
            relation = con.sql(sql, params=params)
            return pl.DataFrame() if relation is None else relation.pl()
        except duckdb.Error as err:
            message = first_line(err)
            if "disabled by configuration" in message or "disabled through configuration" in message:
                message += "; queries read the warehouse only: to save a table or a result to a file, use `dynamics export`"
            raise InputError(f"query failed on {path}: {message}") from err


def analysis(path: str | Path, name: str, model: str | None = None, *, current: bool = False,
             thresholds: Thresholds | None = None, where: str = "", params: Sequence = (),
             order: str = "") -> pl.DataFrame:
    """Rows of one analysis macro (with `thresholds`) or view (without), optionally one model's or current only.

    `name`, `where` and `order` are fixed strings of this package, never user input; values are bound.
    """
    source, values = name, []
    if thresholds is not None:
        arguments, values = thresholds.macro_arguments()
        source = f"{name}({arguments})"
    filters = [f for f in ("model = ?" if model is not None else "", where) if f]
    sql = (f"SELECT a.* FROM {source} a"
           + (" JOIN current_setups USING (model, settings_hash)" if current else "")
           + (" WHERE " + " AND ".join(filters) if filters else "")
           + (f" ORDER BY {order}" if order else ""))
    return query(path, sql, values + ([model] if model is not None else []) + list(params))


def head_trajectories(path: str | Path, model: str | None = None, *, current: bool = False,
                      **thresholds) -> pl.DataFrame:
    """Per (model, settings_hash, step, layer, head): induction and FV scores with standard errors, their
    percentiles and ranks among the step's heads, top-set membership, and whether the head IS an
    induction / FV head there. `thresholds`: any field of `Thresholds`."""
    return analysis(path, "head_trajectories", model, current=current, thresholds=Thresholds.of(**thresholds),
                    order="model, settings_hash, step, layer, head")


def head_set_membership(path: str | Path, model: str | None = None, *, current: bool = False,
                        **thresholds) -> pl.DataFrame:
    """Per head: when it entered and left each top set, when it first was an induction / FV head, its
    peak and final scores, and the `induction_then_fv` flag."""
    return analysis(path, "head_set_membership", model, current=current, thresholds=Thresholds.of(**thresholds),
                    order="model, settings_hash, layer, head")


def induction_to_fv_transitions(path: str | Path, model: str | None = None, *, current: bool = False,
                                **thresholds) -> pl.DataFrame:
    """FV heads at the final step (significant, above the floor) that were induction heads at an earlier step.

    Example: `induction_to_fv_transitions(db)` → one row per such head, with `first_induction_head_step`,
    `peak_induction`, `final_fv ± final_fv_stderr` and the thresholds used.
    """
    return analysis(path, "induction_to_fv_transitions", model, current=current,
                    thresholds=Thresholds.of(**thresholds), order="model, settings_hash, layer, head")


def final_top_head_trajectories(path: str | Path, model: str | None = None, *, current: bool = False,
                                **thresholds) -> pl.DataFrame:
    """Every step of the heads in the final induction or FV top set, with their set membership."""
    return analysis(path, "final_top_head_trajectories", model, current=current,
                    thresholds=Thresholds.of(**thresholds), order="model, settings_hash, layer, head, step")


def mechanism_emergence(path: str | Path, model: str | None = None, *, current: bool = False,
                        **thresholds) -> pl.DataFrame:
    """Per (model, settings_hash): the first step with an induction head, the first with an FV head, and
    which came first."""
    return analysis(path, "mechanism_emergence", model, current=current, thresholds=Thresholds.of(**thresholds),
                    order="model, settings_hash")


def head_strength(path: str | Path, model: str | None = None, *, current: bool = False,
                  **thresholds) -> pl.DataFrame:
    """Per (model, settings_hash, metric) at the final step: max, top-set mean, mean, and how many heads
    are heads of that kind."""
    return analysis(path, "head_strength", model, current=current, thresholds=Thresholds.of(**thresholds),
                    order="model, settings_hash, metric")


def head_dimensionality(path: str | Path, **thresholds) -> pl.DataFrame:
    """Per model (its current setup): d_head, d_model, n_heads and the max, top-set mean and mean of its
    induction and FV scores at the final step."""
    return analysis(path, "head_dimensionality", thresholds=Thresholds.of(**thresholds), order="d_head, model")


def head_dimensionality_correlations(path: str | Path, **thresholds) -> pl.DataFrame:
    """Per (metric, statistic): Pearson and Spearman correlation with d_head across models (null below 3)."""
    return analysis(path, "head_dimensionality_correlations", thresholds=Thresholds.of(**thresholds),
                    order="metric, statistic")


def phase_change(path: str | Path, model: str | None = None, *, current: bool = False) -> pl.DataFrame:
    """Long frame (model, settings_hash, step, tokens, metric, value) of each checkpoint's model-level
    metrics plus 'max_induction' and 'max_fv', the strongest heads at that step."""
    return analysis(path, "phase_change", model, current=current, order="model, settings_hash, metric, step")


def ablation_curves(path: str | Path, model: str | None = None) -> pl.DataFrame:
    """Few-shot accuracy under head ablation, averaged over tasks, one setup per model (see the view)."""
    return analysis(path, "ablation_curves", model, order="model, ranking, exclusion, fraction")


def metric_inventory(path: str | Path) -> pl.DataFrame:
    """Which metrics each model's current setup has: (model, source, metric, n_steps)."""
    return analysis(path, "metric_inventory", order="model, source, metric")


def scored_models(path: str | Path) -> pl.DataFrame:
    """Per model, its current setup: checkpoints scored (steps), failed and duplicate (steps), and its shape."""
    return analysis(path, "scored_models", order="model")


def head_map(path: str | Path, model: str, metric: str, settings_hash: str | None = None) -> pl.DataFrame:
    """(settings_hash, step, layer, head, value, stderr, flag) of one head metric of one model, for heat maps."""
    sql = ("SELECT settings_hash, step, layer, head, value, stderr, flag FROM head_scores WHERE model = ? AND metric = ?"
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



def _suite_analysis(path: str | Path, name: str, suite: str | None, thresholds: dict, order: str) -> pl.DataFrame:
    return analysis(path, name, thresholds=Thresholds.of(**thresholds), where="suite = ?" if suite else "",
                    params=[suite] if suite else [], order=order)


def seed_head_spread(path: str | Path, suite: str | None = None, **thresholds) -> pl.DataFrame:
    """Per (suite, step, layer, head): mean, standard deviation, min and max of that head position's induction
    and FV scores across the suite's seeds, and in how many seeds it IS an induction / FV head.

    Example: `seed_head_spread(db, "EleutherAI/pythia-160m").filter(pl.col("layer") == 4)`
    """
    return _suite_analysis(path, "seed_head_spread", suite, thresholds, "suite, step, layer, head")


def seed_strongest_heads(path: str | Path, suite: str | None = None, **thresholds) -> pl.DataFrame:
    """Per (suite, step, metric): the spread across seeds of each seed's strongest head (mean, std, min, max),
    and in how many seeds some head IS a head of that kind at that step."""
    return _suite_analysis(path, "seed_strongest_heads", suite, thresholds, "suite, metric, step")


def seed_transitions(path: str | Path, suite: str | None = None, **thresholds) -> pl.DataFrame:
    """Per (suite, layer): in how many seeds a head of that layer goes from induction head to FV head."""
    return _suite_analysis(path, "seed_transitions", suite, thresholds, "suite, layer")


def seed_emergence(path: str | Path, suite: str | None = None, **thresholds) -> pl.DataFrame:
    """Per (suite, seed): the first induction-head and FV-head steps, with their spread across the suite's seeds."""
    return _suite_analysis(path, "seed_emergence", suite, thresholds, "suite, seed, model")


SUITE_ANALYSES = ("seed_head_spread", "seed_strongest_heads", "seed_transitions", "seed_emergence")
def scored_weights(path: str | Path, model: str, settings_hash: str) -> dict[int, str | None]:
    """step → weights_sha256 of the checkpoints of `model` done with these settings (status 'ok' or 'duplicate');
    empty when the warehouse does not exist yet."""
    if not Path(path).exists():
        return {}
    frame = query(path, "SELECT step, weights_sha256 FROM checkpoints WHERE model = ? AND settings_hash = ? "
                        "AND status IN ('ok', 'duplicate')", [model, settings_hash])
    return dict(frame.iter_rows())


def local_run_folders(path: str | Path) -> dict[str, str]:
    """model → the folder its most recent run read it from, for every local run the warehouse's runs recorded."""
    if not Path(path).exists():
        return {}
    frame = query(path, "SELECT target->>'model' AS model, arg_max(target->>'location', started_at) AS location "
                        "FROM runs, unnest(CAST(config->'targets' AS JSON[])) AS targets(target) "
                        "WHERE target->>'source' = 'local' GROUP BY 1")
    return dict(frame.iter_rows())


MODEL_ANALYSES = ("head_trajectories", "head_set_membership", "induction_to_fv_transitions",
                  "final_top_head_trajectories", "mechanism_emergence", "head_strength")


def views(path: str | Path, model: str | None = None, *, current: bool = False, **thresholds) -> dict[str, pl.DataFrame]:
    """Every analysis of a warehouse as Polars frames, by view name, for a notebook.

    Example: `v = views("runs/warehouse.duckdb", z=2); v["induction_to_fv_transitions"]`
    """
    chosen = Thresholds.of(**thresholds)
    frames = {name: analysis(path, name, model, current=current, thresholds=chosen) for name in MODEL_ANALYSES}
    frames["head_dimensionality"] = head_dimensionality(path, **thresholds)
    frames["head_dimensionality_correlations"] = head_dimensionality_correlations(path, **thresholds)
    frames["phase_change"] = phase_change(path, model, current=current)
    frames["ablation_curves"] = ablation_curves(path, model)
    frames["scored_models"] = scored_models(path)
    frames["metric_inventory"] = metric_inventory(path)
    frames.update({name: analysis(path, name, thresholds=chosen) for name in SUITE_ANALYSES})
    return frames
