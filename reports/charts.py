"""Altair chart builders: each `chart_*` takes small, already aggregated Polars frames and returns a chart.

Frames come from warehouse/report_queries.py. Steps are drawn on a log axis as step + 1, so step 0
(the initialisation) sits at 1 instead of vanishing at -inf. Every embedded dataset stays under
Altair's 5000-row limit (ecosystem.md §3.5): the head maps nest each (step, layer) row's heads into
lists that Vega-Lite flattens in the browser, after filtering to the selected checkpoint.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from dynamics.errors import InputError

STEP_AXIS = "training step + 1 (log scale)"
INDUCTION_AXIS = "induction score (attention fraction, 0–1)"
FV_AXIS = "FV score (average indirect effect, Δ probability)"
LOSS_METRICS = ("train_loss", "eval_loss", "loss_early", "loss_late")
PHASE_METRICS = (*LOSS_METRICS, "icl_token_loss", "max_induction")  # what chart_phase_change draws
METRIC_LABELS = {
    "train_loss": "training loss",
    "eval_loss": "eval loss",
    "loss_early": "loss, early tokens",
    "loss_late": "loss, late tokens",
    "icl_token_loss": "ICL token loss",
    "max_induction": "max induction score",
}
HEAD_METRIC_AXES = {"induction": INDUCTION_AXIS, "fv": FV_AXIS}
STATISTIC_LABELS = {"max": "max", "top_mean": "mean of top heads", "mean": "mean of all heads"}
TRAJECTORY_GROUPS = ("induction → FV", "final top in both sets", "final FV top", "final induction top")
TRAJECTORY_COLOURS = ("#d62728", "#9467bd", "#1f77b4", "#7f7f7f")
SIGNIFICANT_DIGITS = 4  # scores are rounded before embedding: smaller pages, no visible change


def chart_phase_change(curves: pl.DataFrame, onsets: pl.DataFrame, threshold: float) -> alt.VConcatChart:
    """Loss, ICL token loss and the strongest induction head against step, one panel per quantity.

    Args:
        curves: (model, step, metric, value) in long form; panels are drawn for the metrics present.
        onsets: (model, onset_step, threshold), as `reports.report.induction_onsets` gives: the first
            step whose strongest induction head reached `threshold`, drawn as a vertical rule in every panel.
        threshold: the induction score that counts as a strong induction head.
    """
    data = curves.with_columns((pl.col("step") + 1).alias("step_plus_one"),
                               pl.col("metric").replace(METRIC_LABELS).alias("quantity"))
    one_model = data["model"].n_unique() == 1
    rules = onsets.drop_nulls("onset_step").with_columns((pl.col("onset_step") + 1).alias("step_plus_one"))
    panels = []
    for metrics, y_title, reference in (
        (LOSS_METRICS, "loss (nats/token)", None),
        (("icl_token_loss",), "ICL token loss (nats; < 0: ICL)", 0.0),
        (("max_induction",), "max induction score (0–1)", threshold),
    ):
        panel = data.filter(pl.col("metric").is_in(metrics))
        if panel.is_empty():
            continue
        panels.append(_phase_panel(panel, rules, y_title, reference, colour_by_metric=one_model))
    if not panels:
        raise InputError("no loss, ICL token-loss or induction curves to chart; the warehouse has no such metrics")
    return alt.vconcat(*panels, title=alt.Title(
        "Phase change: loss, in-context learning and induction heads over training",
        subtitle=f"Vertical rules: first step whose strongest induction head scores ≥ {threshold:g}",
    )).resolve_scale(color="shared")


def chart_head_maps(scores: pl.DataFrame) -> alt.HConcatChart:
    """Layer × head heat maps of induction and FV scores with a slider over the given checkpoints.

    Args:
        scores: (model, step, layer, head, induction, fv) for a handful of steps of one model; a score
            column that is all null gets no map.
    """
    steps = sorted(scores["step"].unique().to_list())
    metrics = [m for m in HEAD_METRIC_AXES if m in scores.columns and scores[m].drop_nulls().len() > 0]
    if not metrics:
        raise InputError("no induction or FV scores to map")
    nested = (
        scores.with_columns(pl.col("step").rank("dense").cast(pl.Int32).sub(1).alias("checkpoint"),
                            *(_rounded(m) for m in metrics))
        .sort("step", "layer", "head")
        .group_by("model", "step", "checkpoint", "layer", maintain_order=True)
        .agg("head", *metrics)
    )
    checkpoint = alt.param(name="checkpoint", value=len(steps) - 1, bind=alt.binding_range(
        min=0, max=len(steps) - 1, step=1, name=f"checkpoint (0–{len(steps) - 1}, log-spaced over training) "))
    n_layers, n_heads = scores["layer"].max() + 1, scores["head"].max() + 1
    cell_px = max(6, min(24, 420 // max(n_layers, n_heads)))
    tooltip = ["model:N", "step:Q", "layer:O", "head:O", *(f"{m}:Q" for m in metrics)]
    maps = []
    for metric in metrics:
        values = scores[metric].drop_nulls()
        colour = (alt.Scale(scheme="viridis", domain=[min(0.0, values.min()), max(values.max(), 1e-9)])
                  if metric == "induction" else
                  alt.Scale(scheme="blueorange", domainMid=0, domain=[values.min(), values.max()]))
        title = alt.Title(alt.expr(f'"{metric.replace("fv", "FV")} score at step " + {steps}[checkpoint]'))
        maps.append(
            alt.Chart(nested, title=title, width=max(160, cell_px * n_heads), height=max(160, cell_px * n_layers))
            .transform_filter(alt.datum.checkpoint == checkpoint)
            .transform_flatten(["head", *metrics])
            .mark_rect()
            .encode(
                x=alt.X("head:O", title="head (index within layer)"),
                y=alt.Y("layer:O", title="layer (0 = nearest the embedding)"),
                color=alt.Color(f"{metric}:Q", scale=colour, title=HEAD_METRIC_AXES[metric],
                                legend=alt.Legend(orient="bottom", titleLimit=320, gradientLength=200)),
                tooltip=tooltip,
            )
        )
    return alt.hconcat(*maps, title=alt.Title(
        "Head maps: every head's score, layer × head",
        subtitle=f"Slider: {len(steps)} checkpoints from step {steps[0]} to {steps[-1]}",
    )).add_params(checkpoint).resolve_scale(color="independent")


def chart_trajectories(trajectories: pl.DataFrame) -> alt.HConcatChart:
    """Each final top head's induction and FV score over training; induction→FV heads in red.

    Args:
        trajectories: frame of `warehouse.report_queries.top_head_trajectories` (steps may be thinned).
    """
    data = trajectories.with_columns(
        pl.format("L{}H{}", "layer", "head").alias("head_id"),
        (pl.col("step") + 1).alias("step_plus_one"),
        pl.when("induction_then_fv").then(pl.lit(TRAJECTORY_GROUPS[0]))
        .when(pl.col("final_fv_top") & pl.col("final_induction_top")).then(pl.lit(TRAJECTORY_GROUPS[1]))
        .when("final_fv_top").then(pl.lit(TRAJECTORY_GROUPS[2]))
        .otherwise(pl.lit(TRAJECTORY_GROUPS[3])).alias("group"),
        *(_rounded(m) for m in HEAD_METRIC_AXES),
    ).select("model", "step", "step_plus_one", "layer", "head", "head_id", "group", *HEAD_METRIC_AXES)
    metrics = [m for m in HEAD_METRIC_AXES if data[m].drop_nulls().len() > 0]
    if not metrics:
        raise InputError("no induction or FV trajectories to chart")
    present = [g for g in TRAJECTORY_GROUPS if g in set(data["group"].to_list())]
    colours = alt.Scale(domain=present, range=[TRAJECTORY_COLOURS[TRAJECTORY_GROUPS.index(g)] for g in present])
    pick = alt.selection_point(fields=["group"], bind="legend", name="trajectory_group")
    panels = []
    for i, metric in enumerate(metrics):
        panel = alt.Chart(data, width=360, height=260).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
            x=alt.X("step_plus_one:Q", scale=alt.Scale(type="log", nice=False), title=STEP_AXIS),
            y=alt.Y(f"{metric}:Q", title=HEAD_METRIC_AXES[metric]),
            color=alt.Color("group:N", title="head", scale=colours),
            detail="head_id:N",
            strokeWidth=alt.condition(alt.datum.group == TRAJECTORY_GROUPS[0], alt.value(2.5), alt.value(1.2)),
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.08)),
            tooltip=["model:N", "head_id:N", "layer:O", "head:O", "step:Q", "group:N", *(f"{m}:Q" for m in metrics)],
        ).properties(title=f"{metric.replace('fv', 'FV')} score of each final top head")
        panels.append(panel.add_params(pick) if i == 0 else panel)
    transitions = sorted(data.filter(pl.col("group") == TRAJECTORY_GROUPS[0])["head_id"].unique().to_list())
    if transitions:
        subtitle = (f"{len(transitions)} head(s) went from induction to FV: {', '.join(transitions[:12])}"
                    + (" …" if len(transitions) > 12 else ""))
    elif metrics == ["induction", "fv"]:
        subtitle = "No head went from induction to FV"
    else:
        subtitle = "Induction → FV heads need both scores; only the " + metrics[0].replace("fv", "FV") + " score is present"
    return alt.hconcat(*panels, title=alt.Title("Trajectories of the final top induction and FV heads", subtitle=subtitle))


def chart_induction_vs_fv(final: pl.DataFrame) -> alt.Chart:
    """Every head's induction score against its FV score at the final step, coloured by layer.

    Args:
        final: frame of `warehouse.report_queries.final_head_scores` for one model.
    """
    data = final.drop_nulls(["induction", "fv"]).with_columns(
        pl.when(pl.col("in_induction_top") & pl.col("in_fv_top")).then(pl.lit("both top sets"))
        .when("in_induction_top").then(pl.lit("induction top set"))
        .when("in_fv_top").then(pl.lit("FV top set"))
        .otherwise(pl.lit("neither")).alias("top_set"),
        pl.format("L{}H{}", "layer", "head").alias("head_id"),
        *(_rounded(m) for m in HEAD_METRIC_AXES),
    ).select("model", "step", "layer", "head", "head_id", "induction", "fv", "top_set")
    if data.is_empty():
        raise InputError("no head has both an induction and an FV score at the final step")
    k = int(final["top_k"][0])
    both = sorted(data.filter(pl.col("top_set") == "both top sets")["head_id"].to_list())
    overlap = (f"Top sets (top {k} heads each): overlap {len(both)} of {k} ({100 * len(both) / k:.0f} %)"
               + (f": {', '.join(both[:10])}" + (" …" if len(both) > 10 else "") if both else ""))
    return alt.Chart(data, width=420, height=320, title=alt.Title(
        f"Induction vs FV score of every head at step {int(data['step'][0])}", subtitle=overlap,
    )).mark_point(filled=True, size=40, opacity=0.8).encode(
        x=alt.X("induction:Q", title=INDUCTION_AXIS),
        y=alt.Y("fv:Q", title=FV_AXIS),
        color=alt.Color("layer:Q", scale=alt.Scale(scheme="viridis"), title="layer"),
        shape=alt.Shape("top_set:N", title="top set",
                        scale=alt.Scale(domain=["both top sets", "induction top set", "FV top set", "neither"],
                                        range=["diamond", "triangle-up", "square", "circle"])),
        tooltip=["model:N", "step:Q", "layer:O", "head:O", "induction:Q", "fv:Q", "top_set:N"],
    )


def chart_head_dimensionality(strength: pl.DataFrame) -> alt.HConcatChart:
    """FV and induction strength (max, top-head mean, mean) against d_head across models, with Pearson r.

    Args:
        strength: frame of `warehouse.report_queries.head_strength` (models without d_head are dropped).
    """
    data = strength.drop_nulls(["d_head", "value"]).with_columns(
        pl.col("statistic").replace(STATISTIC_LABELS).alias("statistic_label"))
    if data.is_empty():
        raise InputError("no model has both a d_head and a final-step induction or FV score")
    correlations = dimensionality_correlations(data)
    panels = []
    for metric in [m for m in ("fv", "induction") if m in data["metric"].unique().to_list()]:
        panel_data = data.filter(pl.col("metric") == metric)
        d_heads = sorted(panel_data["d_head"].unique().to_list())
        base = alt.Chart(panel_data, width=320, height=260).encode(
            x=alt.X("d_head:Q", title="d_head (dimensions per head, log₂ scale)", axis=alt.Axis(values=d_heads),
                    scale=alt.Scale(type="log", base=2, domain=[d_heads[0] / 1.25, d_heads[-1] * 1.25])),
            y=alt.Y("value:Q", title=HEAD_METRIC_AXES[metric]),
            color=alt.Color("statistic_label:N", title="statistic", sort=list(STATISTIC_LABELS.values())),
        )
        points = base.mark_point(filled=True, size=60).encode(
            tooltip=["model:N", "d_head:Q", "n_heads_total:Q", "final_step:Q", "statistic_label:N", "value:Q"])
        subtitle = _correlation_text(correlations.filter(pl.col("metric") == metric))
        panels.append(alt.layer(base.mark_line(opacity=0.4), points).properties(
            title=alt.Title(f"{metric.replace('fv', 'FV')} strength vs d_head", subtitle=subtitle)))
    return alt.hconcat(*panels)


def chart_ablations(curves: pl.DataFrame) -> alt.Chart:
    """Few-shot ICL accuracy against the fraction of heads ablated, per ranking, with and without exclusion.

    Args:
        curves: frame of `warehouse.report_queries.ablation_curves`; one column of panels per model.
    """
    data = curves.with_columns(
        pl.when("exclusion").then(pl.lit("with exclusion")).otherwise(pl.lit("without exclusion")).alias("exclusion_label"),
        pl.col("metric").replace({"f1": "F1", "top1": "top-1"}).alias("metric_label"),
        pl.col("ranking").replace({"fv": "FV"}),
    ).drop("exclusion")
    scores = " / ".join(sorted(data["metric_label"].unique().to_list()))
    chart = alt.Chart(data, width=300, height=240).mark_line(point=True).encode(
        x=alt.X("fraction:Q", axis=alt.Axis(format="%"), title="heads ablated (% of all heads)"),
        y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title=f"few-shot accuracy (mean {scores} over tasks, 0–1)"),
        color=alt.Color("ranking:N", title="heads ranked by", sort=["induction", "FV", "random"]),
        strokeDash=alt.StrokeDash("exclusion_label:N", title="exclusion", sort=["without exclusion", "with exclusion"],
                                  legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2)),
        tooltip=["model:N", "step:Q", "ranking:N", "exclusion_label:N", "method:N",
                 alt.Tooltip("fraction:Q", format=".1%"), "metric_label:N", "value:Q", "n_tasks:Q"],
    )
    title = alt.Title("Few-shot accuracy as top heads are ablated",
                      subtitle="Exclusion: the other score's top heads are kept out of the ablated set")
    if data["model"].n_unique() == 1:
        return chart.properties(title=title)
    return chart.facet(facet=alt.Facet("model:N", title=None), columns=3, title=title)


def dimensionality_correlations(strength: pl.DataFrame) -> pl.DataFrame:
    """Pearson r between d_head and each (metric, statistic) across models: (metric, statistic, n_models, pearson).

    r is null below 3 models or when d_head or the score does not vary.
    """
    return (
        strength.drop_nulls(["d_head", "value"])
        .group_by("metric", "statistic")
        .agg(pl.len().alias("n_models"), pl.corr("d_head", "value").alias("pearson"),
             pl.col("d_head").n_unique().alias("n_d_head"), pl.col("value").std().alias("value_std"))
        .with_columns(pl.when((pl.col("n_models") >= 3) & (pl.col("n_d_head") > 1) & (pl.col("value_std") > 0))
                      .then("pearson").alias("pearson"))
        .select("metric", "statistic", "n_models", "pearson")
        .sort("metric", "statistic")
    )


def _phase_panel(panel: pl.DataFrame, rules: pl.DataFrame, y_title: str, reference: float | None,
                 colour_by_metric: bool) -> alt.LayerChart:
    """One vconcat panel: lines per (model, metric), the onset rules and an optional horizontal reference."""
    several_metrics = panel["metric"].n_unique() > 1
    encoding = {
        "x": alt.X("step_plus_one:Q", scale=alt.Scale(type="log", nice=False), title=STEP_AXIS),
        "y": alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        "color": alt.Color("quantity:N" if colour_by_metric else "model:N",
                           title="quantity" if colour_by_metric else "model"),
        "tooltip": ["model:N", "step:Q", "quantity:N", alt.Tooltip("value:Q", format=".4g")],
    }
    if several_metrics and not colour_by_metric:
        encoding["strokeDash"] = alt.StrokeDash("quantity:N", title="quantity",
                                                legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2))
    layers = [alt.Chart(panel, width=560, height=170).mark_line(point=alt.OverlayMarkDef(size=14)).encode(**encoding)]
    if not rules.is_empty():
        rule_colour = alt.value("#555") if colour_by_metric else alt.Color("model:N")
        layers.append(alt.Chart(rules).mark_rule(strokeDash=[4, 3]).encode(
            x="step_plus_one:Q", color=rule_colour,
            tooltip=["model:N", alt.Tooltip("onset_step:Q", title="first strong induction head at step"),
                     alt.Tooltip("threshold:Q", title="threshold")]))
    if reference is not None:
        layers.append(alt.Chart(pl.DataFrame({"reference": [reference]})).mark_rule(color="#999").encode(
            y="reference:Q", tooltip=[alt.Tooltip("reference:Q", title="reference line")]))
    return alt.layer(*layers)


def _correlation_text(correlations: pl.DataFrame) -> list[str]:
    """Subtitle lines stating Pearson r and n for each statistic of one metric."""
    parts = []
    order = list(STATISTIC_LABELS)
    for row in sorted(correlations.iter_rows(named=True), key=lambda row: order.index(row["statistic"])):
        r = "undefined" if row["pearson"] is None else f"{row['pearson']:+.2f}"
        parts.append(f"{STATISTIC_LABELS[row['statistic']]} r = {r}")
    n = int(correlations["n_models"].max()) if not correlations.is_empty() else 0
    note = " (r needs ≥ 3 models with different d_head)" if correlations["pearson"].is_null().any() else ""
    return [f"Pearson r with d_head over n = {n} models{note}:", "; ".join(parts)]


def _rounded(column: str) -> pl.Expr:
    """The column rounded to SIGNIFICANT_DIGITS significant digits."""
    return pl.col(column).round_sig_figs(SIGNIFICANT_DIGITS)
