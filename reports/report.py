"""The training-dynamics report: an index, one page per model and one page across models, all offline HTML.

`render_report(warehouse, out_dir)` reads the warehouse through warehouse/report_queries.py (one scoring
setup per model: the most recently scored settings hash; only 'ok' checkpoints) and writes
`index.html`, `model-<name>.html` per model and `across-models.html`. Each page names what it cannot
show and why (e.g. no FV scores). Data is thinned before charting so that a pythia-6.9b-sized sweep
(1,024 heads × 154 steps) gives pages of a few MB: head maps show at most `max_map_steps` log-spaced
checkpoints, line charts at most about `max_curve_points` points.
"""

from __future__ import annotations

import html
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dynamics.errors import ExistingOutputError, InputError, MissingInputError, NotAFolderError
from reports import charts
from reports.pages import ChartSection, javascript_bundle, notes_html, write_chart_page, write_text_page
from warehouse import report_queries

log = logging.getLogger(__name__)

INDEX_PAGE = "index.html"
ACROSS_MODELS_PAGE = "across-models.html"
_OWN_PAGES = ("index.html", "across-models.html", "model-*.html")  # removed before an overwrite


@dataclass(frozen=True)
class ReportConfig:
    """Thresholds and size budgets of the report; every one is stated on the pages that use it."""

    induction_threshold: float = 0.25  # a "strong" induction head (toy-suite scale); also the floor for induction→FV
    top_fraction: float = 0.02         # top heads = top 2 % (Yin & Steinhardt) ...
    min_top_heads: int = 3             # ... but at least this many
    max_map_steps: int = 24            # checkpoints on the head-map slider
    max_curve_points: int = 4000       # points per line chart (Altair embeds at most 5000 rows)

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.induction_threshold <= 1:
            problems.append(f"induction_threshold must be in (0, 1] (got {self.induction_threshold})")
        if not 0 < self.top_fraction <= 1:
            problems.append(f"top_fraction must be in (0, 1] (got {self.top_fraction}); 0.02 means the top 2 %")
        if self.min_top_heads < 1:
            problems.append(f"min_top_heads must be at least 1 (got {self.min_top_heads})")
        if self.max_map_steps < 2:
            problems.append(f"max_map_steps must be at least 2 (got {self.max_map_steps}): first and last step")
        if not 100 <= self.max_curve_points <= 5000:
            problems.append(f"max_curve_points must be between 100 and 5000 (got {self.max_curve_points})")
        if problems:
            raise InputError(f"ReportConfig has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))

    @property
    def top_rule(self) -> str:
        """How the top sets are chosen, in words."""
        return f"top {100 * self.top_fraction:g} % of heads, at least {self.min_top_heads}"


def render_report(warehouse: Path, out_dir: Path, overwrite: bool = False,
                  config: ReportConfig = ReportConfig()) -> Path:
    """Write the HTML report of `warehouse` into `out_dir` and return the path of its index page.

    Refuses (FileExistsError) to write into a non-empty `out_dir` unless `overwrite`; then the report's
    own pages there are replaced and other files are left alone.

    Example: `render_report(Path("runs/warehouse.duckdb"), Path("runs/report"), overwrite=True)`
    """
    started = time.perf_counter()
    warehouse, out_dir = Path(warehouse), Path(out_dir)
    if not warehouse.exists():
        raise MissingInputError(f"no warehouse at {warehouse}; pass the .duckdb file written by `dynamics sweep`")
    _prepare_out_dir(out_dir, overwrite)
    models = report_queries.report_models(warehouse)
    inventory = report_queries.metric_inventory(warehouse)
    # other model-level metrics are listed on the index but not charted
    curves = report_queries.phase_change_curves(warehouse).filter(pl.col("metric").is_in(charts.PHASE_METRICS))
    onsets = induction_onsets(curves, models["model"].to_list(), config.induction_threshold)
    bundle = javascript_bundle() if not models.is_empty() else ""
    pages = {}
    for row in models.iter_rows(named=True):
        page = _model_page_name(row["model"], taken=set(pages.values()))
        _write_model_page(out_dir / page, warehouse, row, inventory, curves, onsets, config, bundle)
        pages[row["model"]] = page
    if not models.is_empty():
        _write_across_models_page(out_dir / ACROSS_MODELS_PAGE, warehouse, models, inventory, curves, onsets,
                                  config, bundle)
    index = out_dir / INDEX_PAGE
    write_text_page(index, "Training dynamics report", _index_html(warehouse, models, inventory, onsets, pages, config))
    log.info("report of %d model(s) written to %s in %.1f s", models.height, out_dir, time.perf_counter() - started)
    return index


def induction_onsets(curves: pl.DataFrame, models: Sequence[str], threshold: float) -> pl.DataFrame:
    """(model, onset_step, threshold): the first step whose strongest induction head scores ≥ threshold
    (null when no step does, or the model has no induction scores), one row per model in `models`."""
    first = (curves.filter((pl.col("metric") == "max_induction") & (pl.col("value") >= threshold))
             .group_by("model").agg(pl.col("step").min().alias("onset_step")))
    return (pl.DataFrame({"model": list(models)}, schema={"model": pl.String})
            .join(first, on="model", how="left")
            .with_columns(pl.lit(threshold).alias("threshold")))


def pick_steps(steps: Sequence[int], max_steps: int) -> list[int]:
    """At most `max_steps` of `steps`: the first and the last, and the others nearest to points spaced
    evenly in log(step + 1) (so early training, where most changes happen, is not skipped)."""
    steps = sorted(set(steps))
    if len(steps) <= max_steps:
        return steps
    logs = [math.log1p(s) for s in steps]
    span = logs[-1] - logs[0]
    picked = {steps[0], steps[-1]}
    for i in range(1, max_steps - 1):
        target = logs[0] + span * i / (max_steps - 1)
        picked.add(min(steps, key=lambda s: abs(math.log1p(s) - target)))
    return sorted(picked)


def thin_steps(frame: pl.DataFrame, max_rows: int, per: str = "model") -> pl.DataFrame:
    """`frame` limited to about `max_rows` rows by keeping log-spaced steps of each `per` group."""
    groups = frame[per].n_unique()
    if frame.height <= max_rows or groups == 0:
        return frame
    kept = []
    for _, part in frame.group_by(per, maintain_order=True):
        rows_per_step = part.height / part["step"].n_unique()
        keep = pick_steps(part["step"].to_list(), max(8, int(max_rows / groups / rows_per_step)))
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


def _write_model_page(path: Path, warehouse: Path, model: dict, inventory: pl.DataFrame, curves: pl.DataFrame,
                      onsets: pl.DataFrame, config: ReportConfig, bundle: str) -> None:
    name = model["model"]
    notes = missing_notes(inventory, name)
    onset = onsets.filter(pl.col("model") == name)
    sections = []
    own_curves = curves.filter(pl.col("model") == name)
    if not own_curves.is_empty():
        sections.append(ChartSection("phase", charts.chart_phase_change(
            thin_steps(own_curves, config.max_curve_points), onset, config.induction_threshold),
            _phase_caption(onset, config)))
    has = set(inventory.filter((pl.col("model") == name) & (pl.col("source") == "head_scores"))["metric"].to_list())
    if has & {"induction", "fv"}:
        map_steps = pick_steps(model["steps"], config.max_map_steps)
        scores = report_queries.head_map_scores(warehouse, name, map_steps)
        sections.append(ChartSection("maps", charts.chart_head_maps(scores), (
            f"Drag the checkpoint slider ({len(map_steps)} of {model['n_steps']} scored checkpoints, log-spaced, "
            "first and last included) to watch induction heads appear at the phase change and FV heads "
            "strengthen later; each colour scale is fixed across checkpoints, so colours compare over time.")))
        trajectories = report_queries.top_head_trajectories(
            warehouse, name, config.top_fraction, config.min_top_heads, config.induction_threshold)
        n_heads = trajectories.select("layer", "head").n_unique()
        sections.append(ChartSection("trajectories", charts.chart_trajectories(
            thin_steps(trajectories, config.max_curve_points)), _trajectory_caption(n_heads, config)))
    final = (report_queries.final_head_scores(warehouse, name, config.top_fraction, config.min_top_heads)
             if {"induction", "fv"} <= has else pl.DataFrame())
    if not final.is_empty() and not final.drop_nulls(["induction", "fv"]).is_empty():
        sections.append(ChartSection("induction-vs-fv", charts.chart_induction_vs_fv(final), (
            f"Top sets are the {config.top_rule} by each score at the final step. Heads far out on both axes "
            "are both induction and FV heads; look at how small the overlap is and whether FV heads sit in "
            "deeper layers (lighter colours) than induction heads.")))
    ablations = report_queries.ablation_curves(warehouse, name)
    if not ablations.is_empty():
        sections.append(ChartSection("ablations", charts.chart_ablations(ablations), _ablation_caption(ablations)))
    settings = (f"settings hash <code>{html.escape(model['settings_hash'])}</code>"
                + (f" (the most recently scored of {model['n_settings']} scoring setups; older ones are not shown)"
                   if model["n_settings"] > 1 else ""))
    intro = (f'<nav><a href="{INDEX_PAGE}">index</a><a href="{ACROSS_MODELS_PAGE}">across models</a></nav>'
             f"<h1>{html.escape(name)}</h1><p>{_shape_text(model)}; {model['n_steps']} checkpoints scored "
             f"(steps {model['first_step']}–{model['final_step']}); {settings}.</p>")
    write_chart_page(path, f"{name}: training dynamics", notes, sections, intro, bundle)


def _write_across_models_page(path: Path, warehouse: Path, models: pl.DataFrame, inventory: pl.DataFrame,
                              curves: pl.DataFrame, onsets: pl.DataFrame, config: ReportConfig, bundle: str) -> None:
    notes = missing_notes(inventory)
    sections = []
    if not curves.is_empty():
        sections.append(ChartSection("phase", charts.chart_phase_change(
            thin_steps(curves, config.max_curve_points), onsets, config.induction_threshold),
            _phase_caption(onsets, config)))
    strength = report_queries.head_strength(warehouse, config.top_fraction, config.min_top_heads)
    if not strength.drop_nulls(["d_head", "value"]).is_empty():
        n_models = strength.drop_nulls("d_head")["model"].n_unique()
        sections.append(ChartSection("dimensionality", charts.chart_head_dimensionality(strength), (
            f"One point per model at its final step ({n_models} models); 'mean of top heads' averages the "
            f"{config.top_rule}. Look for whether FV strength rises with d_head while induction strength "
            "does not; with few models the Pearson r in the subtitles is fragile.")))
    else:
        notes.append("No head-dimensionality chart: no model has both a known d_head (table models) and "
                     "final-step induction or FV scores.")
    ablations = report_queries.ablation_curves(warehouse)
    if not ablations.is_empty():
        sections.append(ChartSection("ablations", charts.chart_ablations(ablations), _ablation_caption(ablations)))
    intro = (f'<nav><a href="{INDEX_PAGE}">index</a></nav><h1>Across models</h1>'
             f"<p>{models.height} model(s); each uses its most recently scored settings hash.</p>")
    write_chart_page(path, "Training dynamics across models", notes, sections, intro, bundle)


def _index_html(warehouse: Path, models: pl.DataFrame, inventory: pl.DataFrame, onsets: pl.DataFrame,
                pages: dict[str, str], config: ReportConfig) -> str:
    head = f"<h1>Training dynamics report</h1><p>Warehouse <code>{html.escape(str(warehouse))}</code>.</p>"
    if models.is_empty():
        return head + notes_html(["No checkpoint with status 'ok' in this warehouse: score some with "
                                  "`dynamics sweep`, then render the report again."])
    onset_by_model = dict(zip(onsets["model"].to_list(), onsets["onset_step"].to_list()))
    rows = []
    for m in models.iter_rows(named=True):
        metrics = inventory.filter((pl.col("model") == m["model"]) & (pl.col("source") != "ablations"))["metric"]
        onset = onset_by_model.get(m["model"])
        latest = f" (latest of {m['n_settings']})" if m["n_settings"] > 1 else ""
        rows.append(
            f'<tr><td><a href="{html.escape(pages[m["model"]])}">{html.escape(m["model"])}</a></td>'
            f"<td>{_shape_text(m)}</td><td>{m['n_steps']} ({m['first_step']}–{m['final_step']})</td>"
            f"<td>{'none' if onset is None else onset}</td>"
            f"<td>{html.escape(', '.join(sorted(metrics.to_list())) or 'none')}</td>"
            f"<td><code>{html.escape(m['settings_hash'])}</code>{latest}</td></tr>")
    table = ("<table><tr><th>model</th><th>shape</th><th>checkpoints (steps)</th>"
             f"<th>first step with an induction head ≥ {config.induction_threshold:g}</th><th>metrics</th>"
             "<th>settings hash</th></tr>" + "".join(rows) + "</table>")
    return (head + f'<p><a href="{ACROSS_MODELS_PAGE}">Across models</a>: phase change, head dimensionality '
            "and ablations for all models together.</p>" + table + notes_html(missing_notes(inventory)))


def _phase_caption(onsets: pl.DataFrame, config: ReportConfig) -> str:
    found = onsets.drop_nulls("onset_step")
    where = ("; ".join(f"{m}: step {s}" for m, s in zip(found["model"].to_list(), found["onset_step"].to_list()))
             if not found.is_empty() else "no model reached it in the steps scored")
    return (f"Look for the phase change: the ICL token loss (late-token minus early-token loss) falls below zero, "
            f"i.e. later tokens become easier to predict from context, and the training loss bends near the first step whose strongest induction head scores "
            f"at least {config.induction_threshold:g} (dashed rule; {where}). The x-axis is log(step + 1), so "
            "step 0 sits at 1.")


def _trajectory_caption(n_heads: int, config: ReportConfig) -> str:
    return (f"Each line is one of the {n_heads} heads in the final FV or final induction top set "
            f"({config.top_rule}). Red heads are in the final FV top set and were induction heads earlier (in "
            f"the induction top set with a score of at least {config.induction_threshold:g}): look for their "
            "induction score rising at the phase change and fading as their FV score climbs. Click a legend "
            "entry to isolate a group.")


def _ablation_caption(ablations: pl.DataFrame) -> str:
    steps = ", ".join(f"{m} at step {s}" for m, s in ablations.select("model", "step").unique(maintain_order=True).iter_rows())
    return (f"Ablations of {steps}, averaged over tasks. If FV heads carry few-shot ICL, ablating them drops "
            "accuracy faster than ablating induction heads, and both faster than random heads; the dashed "
            "with-exclusion curves keep the other score's top heads intact, separating the two effects.")


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
        for pattern in _OWN_PAGES:
            for old in out_dir.glob(pattern):
                old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
