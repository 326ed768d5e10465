"""The training-dynamics report: an index, one page per model and one page across models, all offline HTML.

`render_report(warehouse, out_dir)` reads the analysis views through warehouse/queries.py (one scoring
setup per model, the `current_setups` view; only 'ok' checkpoints are scored) and writes `index.html`,
`model-<name>.html` per model and `across-models.html` (with the seeds of each suite side by side). Every
caption is computed from the data it sits under; nothing here decides which head is an induction or FV
head (the SQL views do, with the thresholds in `ReportConfig`, which every page states). Data is thinned
before charting so that a pythia-6.9b-sized sweep (1,024 heads × 154 steps) gives pages of a few MB.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dynamics.errors import AccessError, ExistingOutputError, InputError, NotAFolderError
from reports import charts
from reports.pages import ChartSection, javascript_bundle, notes_html, write_chart_page, write_text_page
from warehouse import queries
from warehouse.db import require_warehouse
from warehouse.queries import Thresholds

log = logging.getLogger(__name__)

INDEX_PAGE = "index.html"
ACROSS_MODELS_PAGE = "across-models.html"
_OWN_PAGES = ("index.html", "across-models.html", "model-*.html")  # removed before an overwrite


@dataclass(frozen=True)
class ReportConfig:
    """Thresholds of the analyses (passed to the SQL views) and size budgets; every one is stated on the pages."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    max_map_steps: int = 24            # checkpoints on the head-map slider
    max_curve_points: int = 4000       # points per line chart (Altair embeds at most 5000 rows)

    def __post_init__(self) -> None:
        problems = []
        if self.max_map_steps < 2:
            problems.append(f"max_map_steps must be at least 2 (got {self.max_map_steps}): first and last step")
        if not 100 <= self.max_curve_points <= 5000:
            problems.append(f"max_curve_points must be between 100 and 5000 (got {self.max_curve_points})")
        if problems:
            raise InputError(f"ReportConfig has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))

    @property
    def analysis(self) -> dict:
        """The thresholds as keyword arguments of the warehouse.queries functions."""
        return dataclasses.asdict(self.thresholds)


def render_report(warehouse: Path, out_dir: Path, overwrite: bool = False,
                  config: ReportConfig = ReportConfig()) -> Path:
    """Write the HTML report of `warehouse` into `out_dir` and return the path of its index page.

    Refuses (FileExistsError) to write into a non-empty `out_dir` unless `overwrite`; then the report's
    own pages there are replaced and other files are left alone.

    Example: `render_report(Path("runs/warehouse.duckdb"), Path("runs/report"), overwrite=True)`
    """
    started = time.perf_counter()
    warehouse, out_dir = Path(warehouse), Path(out_dir)
    require_warehouse(warehouse)
    _prepare_out_dir(out_dir, overwrite)
    models = queries.scored_models(warehouse)
    inventory = queries.metric_inventory(warehouse)
    # other model-level metrics are listed on the index but not charted
    curves = queries.phase_change(warehouse, current=True).filter(
        pl.col("metric").is_in(charts.PHASE_METRICS) & pl.col("value").is_not_null())
    emergence = queries.mechanism_emergence(warehouse, current=True, **config.analysis)
    bundle = javascript_bundle() if not models.is_empty() else ""
    pages = {}
    for row in models.iter_rows(named=True):
        page = _model_page_name(row["model"], taken=set(pages.values()))
        _write_model_page(out_dir / page, warehouse, row, inventory, curves, emergence, config, bundle)
        pages[row["model"]] = page
    if not models.is_empty():
        _write_across_models_page(out_dir / ACROSS_MODELS_PAGE, warehouse, models, inventory, curves, emergence,
                                  config, bundle)
    index = out_dir / INDEX_PAGE
    write_text_page(index, "Training dynamics report", _index_html(warehouse, models, inventory, emergence, pages,
                                                                   config))
    log.info("report of %d model(s) written to %s in %.1f s", models.height, out_dir, time.perf_counter() - started)
    return index


def pick_steps(steps: Sequence[int], max_steps: int, log_spaced: bool = True) -> list[int]:
    """At most `max_steps` of `steps`: the first and the last, and the others nearest to points spaced
    evenly in log(step + 1) (long runs: early training, where most changes happen, is not skipped) or in
    step (short runs, drawn on a linear axis)."""
    steps = sorted(set(steps))
    if len(steps) <= max_steps:
        return steps
    position = math.log1p if log_spaced else float
    ends = position(steps[0]), position(steps[-1])
    picked = {steps[0], steps[-1]}
    for i in range(1, max_steps - 1):
        target = ends[0] + (ends[1] - ends[0]) * i / (max_steps - 1)
        picked.add(min(steps, key=lambda s: abs(position(s) - target)))
    return sorted(picked)


def thin_steps(frame: pl.DataFrame, max_rows: int, per: str = "model") -> pl.DataFrame:
    """`frame` limited to about `max_rows` rows by keeping evenly spread steps (on the axis the chart
    uses) of each `per` group."""
    groups = frame[per].n_unique()
    if frame.height <= max_rows or groups == 0:
        return frame
    log_spaced = frame["step"].max() >= charts.LOG_STEPS_FROM
    kept = []
    for _, part in frame.group_by(per, maintain_order=True):
        rows_per_step = part.height / part["step"].n_unique()
        keep = pick_steps(part["step"].to_list(), max(8, int(max_rows / groups / rows_per_step)), log_spaced)
        kept.append(part.filter(pl.col("step").is_in(keep)))
    return pl.concat(kept)


def missing_notes(inventory: pl.DataFrame, model: str | None = None) -> list[str]:
    """Sentences naming what the report cannot show for `model` (or for any model, when None) and why."""
    rows = inventory if model is None else inventory.filter(pl.col("model") == model)
    have = set(zip(rows["source"].to_list(), rows["metric"].to_list()))
    scope = "this model" if model is not None else "this warehouse"
    notes = []
    if ("head_scores", "induction") not in have:
        notes.append(f"No induction scores in {scope}: head maps, trajectories and the induction-onset marker "
                     "need them; score the checkpoints with `dynamics sweep`.")
    if ("head_scores", "fv") not in have:
        notes.append(f"No FV scores in {scope}: run the sweep with FV scoring (without --no-fv, with --tasks DIR) "
                     "to get FV head maps, FV trajectories, induction-to-FV heads and the induction-vs-FV chart.")
    if not have & {("checkpoint_metrics", "train_loss"), ("checkpoint_metrics", "eval_loss")}:
        notes.append(f"No training or eval loss in {scope} (metric 'train_loss' or 'eval_loss'): the phase-change "
                     "chart shows the other curves only.")
    if ("checkpoint_metrics", "icl_token_loss") not in have:
        notes.append(f"No ICL token-loss score in {scope} (metric 'icl_token_loss'): run the sweep with token-loss "
                     "scoring to see in-context learning emerge.")
    if not {m for s, m in have if s == "ablations"} & {"f1", "top1"}:
        notes.append(f"No ablation results in {scope} (table ablations, metric 'f1' or 'top1'): run head "
                     "ablations to get accuracy-versus-ablated-heads curves.")
    return notes


# --- captions: each states what the data under it shows ---------------------------------------------------


def emergence_text(emergence: pl.DataFrame, thresholds: Thresholds) -> str:
    """When each mechanism first appears, per model, and in which order."""
    if emergence.is_empty():
        return "No model has induction or FV scores to look for heads in."
    parts = []
    for row in emergence.iter_rows(named=True):
        induction = "none" if row["induction_step"] is None else f"step {row['induction_step']}"
        fv = "none at any step" if row["fv_step"] is None else f"step {row['fv_step']}"
        order = f" ({row['emergence_order']})" if row["emergence_order"] else ""
        parts.append(f"{row['model']}: first induction head {induction}, first FV head {fv}{order}")
    return ("; ".join(parts) + f". A head counts when it is in the {thresholds.describe()}.")


def icl_text(curves: pl.DataFrame) -> str:
    """Which of early- and late-token loss moves the ICL token-loss score, from the first to the final step."""
    by_metric = {metric: part.sort("step") for (metric,), part in curves.group_by("metric")}
    icl = by_metric.get("icl_token_loss")
    if icl is None or icl.height < 2:
        return ""
    first, last = icl.row(0, named=True), icl.row(-1, named=True)
    text = (f"The ICL token-loss score (late-token minus early-token loss; below zero means later tokens are "
            f"predicted better from context) went {first['value']:.2f} → {last['value']:.2f} from step "
            f"{first['step']} to {last['step']}")
    early, late = by_metric.get("loss_early"), by_metric.get("loss_late")
    if early is None or late is None:
        return text + "."
    e0, e1 = _value_at(early, first["step"]), _value_at(early, last["step"])
    l0, l1 = _value_at(late, first["step"]), _value_at(late, last["step"])
    if None in (e0, e1, l0, l1):
        return text + "."
    late_change, early_change = l1 - l0, e1 - e0
    if abs(late_change) >= abs(early_change):
        cause = f"mostly because late-token loss {'fell' if late_change < 0 else 'rose'} ({l0:.2f} → {l1:.2f})"
        other = f"early-token loss {e0:.2f} → {e1:.2f}"
    else:
        cause = f"mostly because early-token loss {'fell' if early_change < 0 else 'rose'} ({e0:.2f} → {e1:.2f})"
        other = f"late-token loss {l0:.2f} → {l1:.2f}"
    return f"{text}, {cause}; {other}."


def transition_text(trajectories: pl.DataFrame, membership: pl.DataFrame, thresholds: Thresholds) -> str:
    """The heads that went from induction to FV, with their scores; or why none did."""
    n_heads = trajectories.select("layer", "head").n_unique()
    lead = f"Each line is one of the {n_heads} heads in the final FV or final induction top set. "
    moved = membership.filter("induction_then_fv")
    if not moved.is_empty():
        heads = [f"L{r['layer']}H{r['head']} (an induction head from step {r['first_induction_head_step']}, peak "
                 f"{r['peak_induction']:.3f}; final FV {r['final_fv']:.4f} ± {r['final_fv_stderr'] or float('nan'):.4f})"
                 for r in moved.iter_rows(named=True)]
        faded = moved.filter(pl.col("final_induction") < pl.col("peak_induction")).height
        return (lead + f"In red, {len(heads)} head(s) that were induction heads earlier and are FV heads at the final "
                f"step: {'; '.join(heads)}. {faded} of them score lower on induction at the final step than at "
                "their peak.")
    final_fv = membership.filter("final_fv_top").drop_nulls("final_fv")
    if final_fv.is_empty():
        return lead + "No head has an FV score, so none can go from induction to FV."
    best = final_fv.sort("final_fv", descending=True).row(0, named=True)
    stderr = best["final_fv_stderr"]
    score = f"{best['final_fv']:.4f}" + ("" if stderr is None else f" ± {stderr:.4f}")
    if not membership["final_fv_head"].any():
        return (lead + f"No head went from induction to FV: no head is an FV head at the final step (the best, "
                f"L{best['layer']}H{best['head']}, scores {score}, which is below the floor of {thresholds.fv_floor:g} "
                f"or within {thresholds.z:g} standard errors of zero).")
    return (lead + "No head went from induction to FV: the final FV heads were not induction heads at any earlier "
            "step.")


def overlap_text(final: pl.DataFrame) -> str:
    """How many heads the final top sets share, with a warning when a top set is half the heads or more."""
    k, n = int(final["top_k"][0]), final.height
    both = sorted(f"L{r['layer']}H{r['head']}" for r in final.filter(
        pl.col("in_induction_top") & pl.col("in_fv_top")).iter_rows(named=True))
    text = (f"Top sets: the best {k} of {n} heads by each score; they share {len(both)}"
            + (f" ({', '.join(both[:10])}{' …' if len(both) > 10 else ''})." if both else "."))
    if 2 * k >= n:
        text += (f" Warning: each top set holds half the heads or more ({k} of {n}), so overlap between them says "
                 "little; lower --min-top-heads or --top-fraction.")
    n_fv = int(final["is_fv_head"].sum())
    return text + (f" {n_fv} head(s) are FV heads (larger marks)." if n_fv else " No head is an FV head here.")


def ablation_text(curves: pl.DataFrame) -> str:
    """What each ablation run removed, and the accuracy left at the largest ablation, per ranking."""
    parts = []
    for (model,), part in curves.group_by("model", maintain_order=True):
        step, total = part["step"][0], part["n_heads_total"][0]
        clean = part.filter(pl.col("n_ablated").fill_null(0) == 0)["value"]
        largest = part.filter(~pl.col("exclusion")).sort("n_ablated").group_by("ranking", maintain_order=True).last()
        counts = sorted({int(n) for n in part["n_ablated"].drop_nulls().to_list() if n})
        results = ", ".join(f"{r['ranking'].replace('fv', 'FV')} {r['value']:.2f} ({r['n_ablated']} heads)"
                            for r in largest.sort("ranking").iter_rows(named=True))
        parts.append(f"{model} at step {step}: clean accuracy {clean[0]:.2f}" if not clean.is_empty() else
                     f"{model} at step {step}")
        parts[-1] += (f"; the grid ablates {', '.join(map(str, counts))} of {total} heads; at the largest: {results}"
                      if counts else "")
    return ("; ".join(parts) + ". If FV heads carry few-shot ICL, ablating them lowers accuracy more than ablating "
            "induction heads, and both more than random heads; the dashed with-exclusion curves keep the other "
            "score's top heads intact.")


def seed_text(suite: str, strongest: pl.DataFrame, emergence: pl.DataFrame, transitions: pl.DataFrame) -> str:
    """How far one suite's seeds agree: the strongest heads at the last step all seeds reached, when each seed's
    first induction and FV head appeared, and in which layers heads went from induction to FV in how many."""
    n = emergence.height
    seeds = ", ".join(str(seed) for seed in emergence["seed"].to_list())
    parts = [f"{suite}: {n} seeds ({seeds})."]
    complete = strongest.filter(pl.col("n_seeds") == n)
    if not complete.is_empty():
        step = int(complete["step"].max())
        for row in complete.filter(pl.col("step") == step).sort("metric", descending=True).iter_rows(named=True):
            spread = "" if row["std"] is None else f", sd {row['std']:.3g}"
            parts.append(f"At step {step} the highest {row['metric'].replace('fv', 'FV')} score of any head is "
                         f"{row['mean']:.3g} on average (min {row['min']:.3g}, max {row['max']:.3g}{spread}).")
    suite_row = emergence.row(0, named=True)  # seed_emergence repeats its across-seed columns on every seed's row
    for mechanism, metric in (("induction", "induction"), ("FV", "fv")):
        column = f"{metric}_step"
        steps = [f"{'none' if r[column] is None else f'step {r[column]}'} (seed {r['seed']})"
                 for r in emergence.iter_rows(named=True)]
        found = suite_row[f"n_{metric}_seeds"]
        width = suite_row[f"{column}_max"] - suite_row[f"{column}_min"] if found > 1 else None
        spread = ("" if width is None else f"; {found} of {suite_row['n_seeds']} seeds, "
                  + ("all at the same step" if width == 0 else f"spread {width} steps"))
        parts.append(f"First {mechanism} head: {', '.join(steps)}{spread}.")
    moved = transitions.filter(pl.col("n_transition_seeds") > 0)
    if moved.is_empty():
        parts.append("In no seed did an induction head become an FV head.")
    else:
        layers = ", ".join(f"layer {r['layer']} in {r['n_transition_seeds']} of {r['n_seeds']} seeds"
                           for r in moved.iter_rows(named=True))
        parts.append(f"Heads went from induction to FV in {layers}.")
    return " ".join(parts)


def _value_at(frame: pl.DataFrame, step: int) -> float | None:
    values = frame.filter(pl.col("step") == step)["value"]
    return None if values.is_empty() else float(values[0])


# --- pages ---------------------------------------------------------------------------------------------------


def _write_model_page(path: Path, warehouse: Path, model: dict, inventory: pl.DataFrame, curves: pl.DataFrame,
                      emergence: pl.DataFrame, config: ReportConfig, bundle: str) -> None:
    name, final_step = model["model"], model["final_step"]
    notes = missing_notes(inventory, name)
    own_emergence = emergence.filter(pl.col("model") == name)
    sections = []
    own_curves = curves.filter(pl.col("model") == name)
    if not own_curves.is_empty():
        caption = " ".join(filter(None, [emergence_text(own_emergence, config.thresholds), icl_text(own_curves)]))
        sections.append(ChartSection("phase", charts.chart_phase_change(
            thin_steps(own_curves, config.max_curve_points), own_emergence, final_step), caption))
    has = set(inventory.filter((pl.col("model") == name) & (pl.col("source") == "head_scores"))["metric"].to_list())
    if has & {"induction", "fv"}:
        map_steps = pick_steps(model["steps"], config.max_map_steps, final_step >= charts.LOG_STEPS_FROM)
        scores = queries.head_trajectories(warehouse, name, current=True, **config.analysis).filter(
            pl.col("step").is_in(map_steps))
        sections.append(ChartSection("maps", charts.chart_head_maps(scores), (
            f"Drag the checkpoint slider ({len(map_steps)} of {model['n_steps']} scored checkpoints, spread over "
            "training, first and last included) to see when induction and FV heads appear; each colour scale is "
            "fixed across checkpoints, so colours compare over time.")))
        trajectories = queries.final_top_head_trajectories(warehouse, name, current=True, **config.analysis)
        membership = queries.head_set_membership(warehouse, name, current=True, **config.analysis)
        sections.append(ChartSection("trajectories", charts.chart_trajectories(
            thin_steps(trajectories, config.max_curve_points), final_step),
            transition_text(trajectories, membership, config.thresholds)))
        final = scores.filter(pl.col("step") == final_step)
        if {"induction", "fv"} <= has and not final.drop_nulls(["induction", "fv"]).is_empty():
            sections.append(ChartSection("induction-vs-fv", charts.chart_induction_vs_fv(final), overlap_text(final)))
    ablations = queries.ablation_curves(warehouse, name)
    if not ablations.is_empty():
        sections.append(ChartSection("ablations", charts.chart_ablations(ablations), ablation_text(ablations)))
    settings = (f"settings hash <code>{html.escape(model['settings_hash'])}</code>"
                + (f" (the most recently scored of {model['n_settings']} scoring setups; older ones are not shown)"
                   if model["n_settings"] > 1 else ""))
    intro = (f'<nav><a href="{INDEX_PAGE}">index</a><a href="{ACROSS_MODELS_PAGE}">across models</a></nav>'
             f"<h1>{html.escape(name)}</h1><p>{_shape_text(model)}; {model['n_steps']} checkpoints scored "
             f"(steps {model['first_step']}–{final_step}){_left_out_text(model)}; {settings}.</p>"
             f"<p>Thresholds: a head is an induction (FV) head at a step when it is in the "
             f"{html.escape(config.thresholds.describe())}.</p>")
    write_chart_page(path, f"{name}: training dynamics", notes, sections, intro, bundle)


def _write_across_models_page(path: Path, warehouse: Path, models: pl.DataFrame, inventory: pl.DataFrame,
                              curves: pl.DataFrame, emergence: pl.DataFrame, config: ReportConfig,
                              bundle: str) -> None:
    notes = missing_notes(inventory)
    sections = []
    if not curves.is_empty():
        sections.append(ChartSection("phase", charts.chart_phase_change(
            thin_steps(curves, config.max_curve_points), emergence, int(models["final_step"].max())),
            emergence_text(emergence, config.thresholds)))
    strength = _strength_points(queries.head_dimensionality(warehouse, **config.analysis))
    if not strength.drop_nulls(["d_head", "value"]).is_empty():
        correlations = queries.head_dimensionality_correlations(warehouse, **config.analysis)
        n_models = strength.drop_nulls("d_head")["model"].n_unique()
        sections.append(ChartSection("dimensionality", charts.chart_head_dimensionality(strength, correlations), (
            f"One point per model at its final step ({n_models} models); 'mean of top heads' averages each "
            f"model's top set (the top {100 * config.thresholds.top_fraction:g} % of its heads, at least "
            f"{config.thresholds.min_top_heads}, whatever they score). Look for whether FV strength rises with d_head "
            "while induction strength does not; with few models the correlations in the subtitles are fragile.")))
    else:
        notes.append("No head-dimensionality chart: no model has both a known d_head (table models) and "
                     "final-step induction or FV scores.")
    ablations = queries.ablation_curves(warehouse)
    if not ablations.is_empty():
        sections.append(ChartSection("ablations", charts.chart_ablations(ablations), ablation_text(ablations)))
    sections += _seed_sections(warehouse, config)
    intro = (f'<nav><a href="{INDEX_PAGE}">index</a></nav><h1>Across models</h1>'
             f"<p>{models.height} model(s); each uses its most recently scored settings hash.</p>")
    write_chart_page(path, "Training dynamics across models", notes, sections, intro, bundle)


def _seed_sections(warehouse: Path, config: ReportConfig) -> list[ChartSection]:
    """One section per suite with at least two seeds (models.suite): the seeds side by side."""
    emergence = queries.seed_emergence(warehouse, **config.analysis)
    sections = []
    for (suite,), members in emergence.group_by("suite", maintain_order=True):
        if members.height < 2:
            continue
        strongest = queries.seed_strongest_heads(warehouse, suite, **config.analysis)
        if strongest.is_empty():
            continue
        transitions = queries.seed_transitions(warehouse, suite, **config.analysis)
        chart = charts.chart_seed_spread(thin_steps(strongest, config.max_curve_points, per="metric"), members,
                                         int(strongest["step"].max()))
        sections.append(ChartSection(f"seeds-{len(sections)}", chart,
                                     seed_text(suite, strongest, members, transitions)))
    return sections


def _strength_points(dimensionality: pl.DataFrame) -> pl.DataFrame:
    """head_dimensionality in long form: one row per (model, metric, statistic), with the model's head count."""
    columns = [f"{metric}_{statistic}" for metric in ("induction", "fv") for statistic in ("max", "top_mean", "mean")]
    return (dimensionality.with_columns((pl.col("n_layers") * pl.col("n_heads")).alias("n_heads_total"))
            .unpivot(index=["model", "d_head", "n_heads_total", "final_step"], on=columns, variable_name="column")
            .with_columns(pl.col("column").str.extract(r"^(induction|fv)_").alias("metric"),
                          pl.col("column").str.replace(r"^(induction|fv)_", "").alias("statistic"))
            .drop("column"))


def _index_html(warehouse: Path, models: pl.DataFrame, inventory: pl.DataFrame, emergence: pl.DataFrame,
                pages: dict[str, str], config: ReportConfig) -> str:
    head = f"<h1>Training dynamics report</h1><p>Warehouse <code>{html.escape(str(warehouse))}</code>.</p>"
    if models.is_empty():
        return head + notes_html(["No checkpoint with status 'ok' in this warehouse: score some with "
                                  "`dynamics sweep`, then render the report again."])
    first = {r["model"]: r for r in emergence.iter_rows(named=True)}
    rows = []
    for m in models.iter_rows(named=True):
        metrics = inventory.filter((pl.col("model") == m["model"]) & (pl.col("source") != "ablations"))["metric"]
        found = first.get(m["model"], {})
        latest = f" (latest of {m['n_settings']})" if m["n_settings"] > 1 else ""
        rows.append(
            f'<tr><td><a href="{html.escape(pages[m["model"]])}">{html.escape(m["model"])}</a></td>'
            f"<td>{_shape_text(m)}</td><td>{m['n_steps']} ({m['first_step']}–{m['final_step']})"
            f"{_left_out_text(m)}</td>"
            f"<td>{_step_or_none(found.get('induction_step'))}</td><td>{_step_or_none(found.get('fv_step'))}</td>"
            f"<td>{html.escape(', '.join(sorted(metrics.to_list())) or 'none')}</td>"
            f"<td><code>{html.escape(m['settings_hash'])}</code>{latest}</td></tr>")
    table = ("<table><tr><th>model</th><th>shape</th><th>checkpoints scored (steps)</th>"
             "<th>first induction head</th><th>first FV head</th><th>metrics</th><th>settings hash</th></tr>"
             + "".join(rows) + "</table>")
    return (head + f'<p><a href="{ACROSS_MODELS_PAGE}">Across models</a>: phase change, head dimensionality '
            "and ablations for all models together.</p>"
            f"<p>A head counts as an induction (FV) head at a step when it is in the "
            f"{html.escape(config.thresholds.describe())}.</p>" + table + notes_html(missing_notes(inventory)))


def _step_or_none(step: int | None) -> str:
    return "none" if step is None else f"step {step}"


def _left_out_text(model: dict) -> str:
    """The checkpoints of the model's setup that have no scores, named."""
    parts = []
    if model["failed_steps"]:
        parts.append(f"{len(model['failed_steps'])} failed (steps {_steps_list(model['failed_steps'])}; "
                     "their errors are in checkpoints.error)")
    if model["duplicate_steps"]:
        parts.append(f"{len(model['duplicate_steps'])} duplicate of an earlier step "
                     f"(steps {_steps_list(model['duplicate_steps'])})")
    return "; " + ", ".join(parts) if parts else ""


def _steps_list(steps: Sequence[int]) -> str:
    return ", ".join(map(str, steps[:12])) + (" …" if len(steps) > 12 else "")


def _shape_text(model: dict) -> str:
    d_head = f", d_head {model['d_head']}" if model.get("d_head") is not None else ""
    return f"{model['n_layers']} layers × {model['n_heads']} heads{d_head}"


def _model_page_name(model: str, taken: set[str]) -> str:
    """A file name for a model page: 'EleutherAI/pythia-160m' -> 'model-EleutherAI--pythia-160m.html'."""
    stem = "model-" + re.sub(r"[^A-Za-z0-9._-]+", "-", model.replace("/", "--")).strip("-.")
    name, n = f"{stem}.html", 2
    while name in taken:
        name, n = f"{stem}-{n}.html", n + 1
    return name


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotAFolderError(f"report folder {out_dir} is a file; pass a folder path with --out")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExistingOutputError(f"report folder {out_dir} already exists and is not empty; pass --overwrite "
                                      "to replace the report in it, or choose another --out")
    try:  # a read-only or immutable folder fails here, in one line, before any page is rendered
        if out_dir.exists():
            for pattern in _OWN_PAGES:
                for old in out_dir.glob(pattern):
                    old.unlink()
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as err:
        raise AccessError(f"cannot write the report into {out_dir} ({err.strerror}); make the folder writable or "
                          "choose another --out") from err
