"""Altair chart builders: each `chart_*` takes small, already aggregated Polars frames and returns a chart.

Frames come from warehouse/queries.py (the analysis views); nothing here decides which head is an
induction or FV head. Every embedded dataset stays under Altair's 5000-row limit (docs/pitfalls.md,
"Altair row limit"): the head maps nest each (step, layer) row's heads into lists that Vega-Lite
flattens in the browser, after filtering to the selected checkpoint. Charts are sized for a page of
about 1,300 px.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from dynamics.errors import InputError

PAGE_PX = 1240  # drawing width available on a report page (the page is at most 1,400 px wide)
INDUCTION_AXIS = "induction score (attention fraction, 0–1)"
FV_AXIS = "FV score (average indirect effect, Δ probability)"
LOSS_METRICS = ("train_loss", "eval_loss", "loss_early", "loss_late")
ACCURACY_METRICS = ("fewshot_top1", "fewshot_shuffled_top1")
PHASE_METRICS = (*LOSS_METRICS, "icl_token_loss", *ACCURACY_METRICS, "max_induction", "max_fv")  # what chart_phase_change draws
METRIC_LABELS = {
    "train_loss": "training loss",
    "eval_loss": "eval loss",
    "loss_early": "loss, early tokens",
    "loss_late": "loss, late tokens",
    "icl_token_loss": "ICL token loss",
    "fewshot_top1": "few-shot accuracy",
    "fewshot_shuffled_top1": "few-shot accuracy, labels shuffled",
    "max_induction": "max induction score",
    "max_fv": "max FV score",
}
HEAD_METRIC_AXES = {"induction": INDUCTION_AXIS, "fv": FV_AXIS}
STATISTIC_LABELS = {"max": "max", "top_mean": "mean of top heads", "mean": "mean of all heads"}
TRAJECTORY_GROUPS = ("induction → FV", "final top in both sets", "final FV top", "final induction top")
TRAJECTORY_COLOURS = ("#d62728", "#9467bd", "#1f77b4", "#7f7f7f")
SIGNIFICANT_DIGITS = 4  # scores are rounded before embedding: smaller pages, no visible change
LOG_STEPS_FROM = 20_000  # runs this long get a log step axis (Pythia); shorter runs (toy suites) a linear one
MAX_DISCRETE_LAYERS = 12  # up to this many layers, one distinct colour per layer


def step_axis(final_step: int) -> tuple[str, alt.Scale, alt.Axis, str]:
    """(field, scale, axis, title) of the training-step axis.

    A log axis shows step + 1 (so initialisation sits at 1) with one labelled tick per power of ten; a
    linear axis shows the step itself. Short runs put their checkpoints on a linear schedule, where a log
    axis would squeeze the phase change into a few pixels.
    """
    if final_step >= LOG_STEPS_FROM:
        ticks = [10**i for i in range(len(str(final_step + 1)) + 1)]
        return ("step_plus_one", alt.Scale(type="log", nice=False),
                alt.Axis(values=ticks, format="~s", labelOverlap=True), "training step + 1 (log scale)")
    return "step", alt.Scale(nice=False), alt.Axis(format=",d", labelOverlap=True, tickCount=10), "training step"


def chart_phase_change(curves: pl.DataFrame, emergence: pl.DataFrame, final_step: int) -> alt.VConcatChart:
    """Loss, ICL token loss and the strongest induction and FV heads against step, one panel per quantity.

    Args:
        curves: (model, step, metric, value) in long form; panels are drawn for the metrics present.
        emergence: (model, induction_step, fv_step) of `warehouse.queries.mechanism_emergence`: the
            first step with an induction head and with an FV head, drawn as vertical rules in every panel.
        final_step: the last step of the longest run shown (chooses the step axis).
    """
    field, scale, axis, title = step_axis(final_step)
    data = curves.with_columns((pl.col("step") + 1).alias("step_plus_one"),
                               pl.col("metric").replace(METRIC_LABELS).alias("quantity"))
    one_model = data["model"].n_unique() == 1
    rules = _emergence_rules(emergence)
    panels = []
    for metrics, y_title in (
        (LOSS_METRICS, "loss (nats/token)"),
        (("icl_token_loss",), "ICL token loss (nats; < 0: ICL)"),
        (ACCURACY_METRICS, "few-shot top-1 accuracy (0–1)"),
        (("max_induction",), "highest induction score, any head (0–1)"),
        (("max_fv",), "highest FV score, any head (Δ probability)"),
    ):
        panel = data.filter(pl.col("metric").is_in(metrics))
        if panel.is_empty():
            continue
        reference = 0.0 if metrics == ("icl_token_loss",) else None
        panels.append(_phase_panel(panel, rules, (field, scale, axis, title), y_title, reference, one_model))
    if not panels:
        raise InputError("no loss, ICL token-loss, induction or FV curves to chart; the warehouse has no such metrics")
    return alt.vconcat(*panels, title=alt.Title(
        "Phase change: loss, in-context learning and the strongest heads over training",
        subtitle="Vertical rules: first step with an induction head (solid) and with an FV head (dashed)",
    )).resolve_scale(color="shared", strokeDash="shared")


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
    width = min(PAGE_PX // len(metrics) - 80, max(240, 36 * n_heads))
    height = min(520, max(160, 36 * n_layers))
    tooltip = ["model:N", "step:Q", "layer:O", "head:O", *(f"{m}:Q" for m in metrics)]
    maps = []
    for metric in metrics:
        values = scores[metric].drop_nulls()
        colour = (alt.Scale(scheme="viridis", domain=[min(0.0, values.min()), max(values.max(), 1e-9)])
                  if metric == "induction" else
                  alt.Scale(scheme="blueorange", domainMid=0, domain=[values.min(), values.max()]))
        title = alt.Title(alt.expr(f'"{metric.replace("fv", "FV")} score at step " + {steps}[checkpoint]'))
        maps.append(
            alt.Chart(nested, title=title, width=width, height=height)
            .transform_filter(alt.datum.checkpoint == checkpoint)
            .transform_flatten(["head", *metrics])
            .mark_rect()
            .encode(
                x=alt.X("head:O", title="head (index within layer)"),
                y=alt.Y("layer:O", title="layer (0 = nearest the embedding)"),
                color=alt.Color(f"{metric}:Q", scale=colour, title=HEAD_METRIC_AXES[metric],
                                legend=alt.Legend(orient="bottom", titleLimit=360, gradientLength=260)),
                tooltip=tooltip,
            )
        )
    return alt.hconcat(*maps, title=alt.Title(
        "Head maps: every head's score, layer × head",
        subtitle=f"Slider: {len(steps)} checkpoints from step {steps[0]} to {steps[-1]}",
    )).add_params(checkpoint).resolve_scale(color="independent")


def chart_trajectories(trajectories: pl.DataFrame, final_step: int) -> alt.HConcatChart:
    """Each final top head's induction and FV score over training; induction→FV heads in red.

    Args:
        trajectories: frame of `warehouse.queries.final_top_head_trajectories` (steps may be thinned).
        final_step: the model's last step (chooses the step axis).
    """
    field, scale, axis, axis_title = step_axis(final_step)
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
        panel = alt.Chart(data, width=PAGE_PX // len(metrics) - 140, height=300).mark_line(
            point=alt.OverlayMarkDef(size=14)).encode(
            x=alt.X(f"{field}:Q", scale=scale, axis=axis, title=axis_title),
            y=alt.Y(f"{metric}:Q", title=HEAD_METRIC_AXES[metric]),
            color=alt.Color("group:N", title="head", scale=colours,
                            legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3)),
            detail="head_id:N",
            strokeWidth=alt.condition(alt.datum.group == TRAJECTORY_GROUPS[0], alt.value(2.5), alt.value(1.2)),
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.08)),
            tooltip=["model:N", "head_id:N", "layer:O", "head:O", "step:Q", "group:N", *(f"{m}:Q" for m in metrics)],
        ).properties(title=f"{metric.replace('fv', 'FV')} score of each final top head")
        panels.append(panel.add_params(pick) if i == 0 else panel)
    return alt.hconcat(*panels, title="Trajectories of the final top induction and FV heads")


def chart_induction_vs_fv(final: pl.DataFrame) -> alt.Chart:
    """Every head's induction score against its FV score at the final step, coloured by layer.

    Args:
        final: rows of `warehouse.queries.head_trajectories` at one model's final step.
    """
    data = final.drop_nulls(["induction", "fv"]).with_columns(
        pl.when(pl.col("in_induction_top") & pl.col("in_fv_top")).then(pl.lit("both top sets"))
        .when("in_induction_top").then(pl.lit("induction top set"))
        .when("in_fv_top").then(pl.lit("FV top set"))
        .otherwise(pl.lit("neither")).alias("top_set"),
        pl.format("L{}H{}", "layer", "head").alias("head_id"),
        *(_rounded(m) for m in (*HEAD_METRIC_AXES, "fv_stderr")),
    ).select("model", "step", "layer", "head", "head_id", "induction", "fv", "fv_stderr", "top_set", "is_fv_head")
    if data.is_empty():
        raise InputError("no head has both an induction and an FV score at the final step")
    n_layers = int(final["layer"].max()) + 1
    layer_colour = (alt.Color("layer:O", scale=alt.Scale(scheme="tableau10" if n_layers <= 10 else "tableau20"),
                              title="layer")
                    if n_layers <= MAX_DISCRETE_LAYERS else
                    alt.Color("layer:Q", scale=alt.Scale(scheme="viridis"), title="layer"))
    return alt.Chart(data, width=PAGE_PX - 300, height=380, title=alt.Title(
        f"Induction vs FV score of every head at step {int(data['step'][0])}",
        subtitle="Larger marks: heads that are FV heads (top set, above the floor, significant)",
    )).mark_point(filled=True, opacity=0.85).encode(
        x=alt.X("induction:Q", title=INDUCTION_AXIS),
        y=alt.Y("fv:Q", title=FV_AXIS),
        color=layer_colour,
        size=alt.condition(alt.datum.is_fv_head, alt.value(160), alt.value(45)),
        shape=alt.Shape("top_set:N", title="top set",
                        scale=alt.Scale(domain=["both top sets", "induction top set", "FV top set", "neither"],
                                        range=["diamond", "triangle-up", "square", "circle"])),
        tooltip=["model:N", "step:Q", "layer:O", "head:O", "induction:Q", "fv:Q", "fv_stderr:Q", "top_set:N"],
    )


def chart_head_dimensionality(strength: pl.DataFrame, correlations: pl.DataFrame) -> alt.HConcatChart:
    """FV and induction strength (max, top-head mean, mean) against d_head across models, with the
    correlations the `head_dimensionality_correlations` view computes.

    Args:
        strength: (model, d_head, n_heads_total, final_step, metric, statistic, value), models without d_head dropped.
        correlations: rows of `warehouse.queries.head_dimensionality_correlations`.
    """
    data = strength.drop_nulls(["d_head", "value"]).with_columns(
        pl.col("statistic").replace(STATISTIC_LABELS).alias("statistic_label"))
    if data.is_empty():
        raise InputError("no model has both a d_head and a final-step induction or FV score")
    panels = []
    metrics = [m for m in ("fv", "induction") if m in data["metric"].unique().to_list()]
    for metric in metrics:
        panel_data = data.filter(pl.col("metric") == metric)
        d_heads = sorted(panel_data["d_head"].unique().to_list())
        base = alt.Chart(panel_data, width=PAGE_PX // len(metrics) - 200, height=300).encode(
            x=alt.X("d_head:Q", title="d_head (dimensions per head, log₂ scale)", axis=alt.Axis(values=d_heads),
                    scale=alt.Scale(type="log", base=2, domain=[d_heads[0] / 1.25, d_heads[-1] * 1.25])),
            y=alt.Y("value:Q", title=HEAD_METRIC_AXES[metric]),
            color=alt.Color("statistic_label:N", title="statistic", sort=list(STATISTIC_LABELS.values())),
        )
        points = base.mark_point(filled=True, size=70).encode(
            tooltip=["model:N", "d_head:Q", "n_heads_total:Q", "final_step:Q", "statistic_label:N", "value:Q"])
        subtitle = correlation_text(correlations.filter(pl.col("metric") == metric))
        panels.append(alt.layer(base.mark_line(opacity=0.4), points).properties(
            title=alt.Title(f"{metric.replace('fv', 'FV')} strength vs d_head", subtitle=subtitle)))
    return alt.hconcat(*panels)


def chart_seed_spread(strongest: pl.DataFrame, emergence: pl.DataFrame, final_step: int) -> alt.HConcatChart:
    """One suite's seeds side by side: per step, the spread across seeds of each seed's strongest induction
    and FV head (band: min to max; line: mean), and each seed's first step with a head of that kind (rules).

    Args:
        strongest: rows of `warehouse.queries.seed_strongest_heads` for one suite.
        emergence: rows of `warehouse.queries.seed_emergence` for the same suite (one per seed).
        final_step: the suite's last step (chooses the step axis).
    """
    field, scale, axis, axis_title = step_axis(final_step)
    data = strongest.with_columns((pl.col("step") + 1).alias("step_plus_one"),
                                  *(_rounded(c) for c in ("mean", "std", "min", "max")))
    data = data.select("suite", "step", "step_plus_one", "metric", "n_seeds", "mean", "std", "min", "max")
    rules = (emergence.select(pl.col("seed").cast(pl.Utf8), pl.col("induction_step").alias("induction"),
                              pl.col("fv_step").alias("fv"))
             .unpivot(index="seed", variable_name="metric", value_name="step").drop_nulls("step")
             .with_columns((pl.col("step") + 1).alias("step_plus_one")))
    metrics = [m for m in HEAD_METRIC_AXES if not data.filter(pl.col("metric") == m).is_empty()]
    if not metrics:
        raise InputError("no strongest-head spread to chart: the suite's seeds have no induction or FV scores")
    x = alt.X(f"{field}:Q", scale=scale, axis=axis, title=axis_title)
    seed_colour = alt.Color("seed:N", title="seed (first head at)", legend=alt.Legend(symbolType="stroke"))
    panels = []
    for metric in metrics:
        part = data.filter(pl.col("metric") == metric)
        name = metric.replace("fv", "FV")
        band = alt.Chart(part).mark_area(opacity=0.25, color="#4c78a8").encode(
            x=x, y=alt.Y("min:Q", title=f"strongest head: {HEAD_METRIC_AXES[metric]}"), y2="max:Q")
        line = alt.Chart(part).mark_line(point=alt.OverlayMarkDef(size=14), color="#1f4e79").encode(
            x=x, y="mean:Q",
            tooltip=["suite:N", "step:Q", "n_seeds:Q", "mean:Q", "std:Q", "min:Q", "max:Q"])
        layers = [band, line]
        own_rules = rules.filter(pl.col("metric") == metric)
        if not own_rules.is_empty():
            layers.append(alt.Chart(own_rules).mark_rule(strokeDash=[4, 3], strokeWidth=1.5).encode(
                x=f"{field}:Q", color=seed_colour,
                tooltip=["seed:N", alt.Tooltip("step:Q", title=f"first step with an {name} head")]))
        panels.append(alt.layer(*layers).properties(
            width=PAGE_PX // len(metrics) - 170, height=260, title=f"highest {name} score across seeds"))
    return alt.hconcat(*panels, title=alt.Title(
        f"Seeds of {data['suite'][0]}: the strongest heads over training",
        subtitle="Band: min to max over seeds; line: mean; dashed rules: each seed's first step with a head of "
                 "that kind"))


def chart_ablations(curves: pl.DataFrame) -> alt.Chart:
    """Few-shot ICL accuracy against the heads ablated, per ranking, with and without exclusion.

    The x-axis counts heads when each point ablates only a few (fractions of a small model collapse to the
    same count), and shows the fraction of all heads otherwise.

    Args:
        curves: frame of `warehouse.queries.ablation_curves`; one column of panels per model.
    """
    by_count = int(curves["n_ablated"].max() or 0) <= 20
    data = curves.with_columns(
        pl.when("exclusion").then(pl.lit("with exclusion")).otherwise(pl.lit("without exclusion")).alias("exclusion_label"),
        pl.col("metric").replace({"f1": "F1", "top1": "top-1"}).alias("metric_label"),
        pl.col("ranking").replace({"fv": "FV"}),
        pl.col("n_ablated").fill_null(0),
    ).drop("exclusion")
    scores = " / ".join(sorted(data["metric_label"].unique().to_list()))
    x = (alt.X("n_ablated:Q", title="heads ablated", axis=alt.Axis(tickMinStep=1, format="d"))
         if by_count else alt.X("ablated_fraction:Q", axis=alt.Axis(format="%"), title="heads ablated (% of all heads)"))
    chart = _lines_with_points(data, {
        "x": x,
        "y": alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title=f"few-shot accuracy (mean {scores} over tasks, 0–1)"),
        "color": alt.Color("ranking:N", title="heads ranked by", sort=["induction", "FV", "random"]),
        "strokeDash": alt.StrokeDash("exclusion_label:N", title="exclusion", sort=["without exclusion", "with exclusion"],
                                     legend=alt.Legend(symbolStrokeColor="#333", symbolSize=400)),
        "tooltip": ["model:N", "step:Q", "ranking:N", "exclusion_label:N", "method:N", "n_ablated:Q",
                    alt.Tooltip("ablated_fraction:Q", format=".1%"), "metric_label:N", "value:Q", "n_tasks:Q"],
    }, point_size=50, width=PAGE_PX // min(3, data["model"].n_unique()) - 220, height=280)
    title = alt.Title("Few-shot accuracy as top heads are ablated",
                      subtitle="Exclusion: the other score's top heads are kept out of the ablated set")
    if data["model"].n_unique() == 1:
        return chart.properties(title=title)
    return chart.facet(facet=alt.Facet("model:N", title=None), columns=3, title=title)


def correlation_text(correlations: pl.DataFrame) -> list[str]:
    """Subtitle lines stating Pearson r and n for each statistic of one metric."""
    parts = []
    order = list(STATISTIC_LABELS)
    for row in sorted(correlations.iter_rows(named=True), key=lambda row: order.index(row["statistic"])):
        r = "undefined" if row["pearson"] is None else f"{row['pearson']:+.2f}"
        parts.append(f"{STATISTIC_LABELS[row['statistic']]} r = {r}")
    n = int(correlations["n_models"].max()) if not correlations.is_empty() else 0
    note = " (r needs ≥ 3 models with different d_head)" if correlations["pearson"].is_null().any() else ""
    return [f"Pearson r with d_head over n = {n} models{note}:", "; ".join(parts)]


def _emergence_rules(emergence: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, mechanism) that emerged: (model, mechanism, step, step_plus_one)."""
    rows = (emergence.select("model", pl.col("induction_step").alias("induction"), pl.col("fv_step").alias("FV"))
            .unpivot(index="model", variable_name="mechanism", value_name="step").drop_nulls("step"))
    return rows.with_columns((pl.col("step") + 1).alias("step_plus_one"))


def _phase_panel(panel: pl.DataFrame, rules: pl.DataFrame, step: tuple, y_title: str, reference: float | None,
                 colour_by_metric: bool) -> alt.LayerChart:
    """One vconcat panel: lines per (model, metric), the emergence rules and an optional horizontal reference."""
    field, scale, axis, title = step
    several_metrics = panel["metric"].n_unique() > 1
    encoding = {
        "x": alt.X(f"{field}:Q", scale=scale, axis=axis, title=title),
        "y": alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        "color": alt.Color("quantity:N" if colour_by_metric else "model:N",
                           title="quantity" if colour_by_metric else "model",
                           legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3)),
        "tooltip": ["model:N", "step:Q", "quantity:N", alt.Tooltip("value:Q", format=".4g")],
    }
    if several_metrics and not colour_by_metric:
        encoding["strokeDash"] = alt.StrokeDash("quantity:N", title="quantity",
                                                legend=alt.Legend(symbolStrokeColor="#333", symbolSize=400))
    layers = [_lines_with_points(panel, encoding, point_size=14, width=PAGE_PX - 260, height=170)]
    rule_colour = alt.value("#555") if colour_by_metric else alt.Color("model:N")
    for mechanism, dash in (("induction", []), ("FV", [5, 4])):
        mechanism_rules = rules.filter(pl.col("mechanism") == mechanism)
        if not mechanism_rules.is_empty():
            layers.append(alt.Chart(mechanism_rules).mark_rule(strokeDash=dash, strokeWidth=1.5).encode(
                x=f"{field}:Q", color=rule_colour,
                tooltip=["model:N", alt.Tooltip("step:Q", title=f"first step with an {mechanism} head")]))
    if reference is not None:
        layers.append(alt.Chart(pl.DataFrame({"reference": [reference]})).mark_rule(color="#999").encode(
            y="reference:Q", tooltip=[alt.Tooltip("reference:Q", title="reference line")]))
    return alt.layer(*layers)


def _lines_with_points(data: pl.DataFrame, encoding: dict, point_size: int, width: int, height: int) -> alt.LayerChart:
    """Lines with a dot at each point. The dots are a layer of their own, without the line's dash: a dash
    legend drawn from a line's point overlay shows dots and no dashes."""
    dots = {channel: value for channel, value in encoding.items() if channel != "strokeDash"}
    return alt.layer(alt.Chart().mark_line().encode(**encoding),
                     alt.Chart().mark_point(filled=True, opacity=1, size=point_size).encode(**dots),
                     data=data).properties(width=width, height=height)


def _rounded(column: str) -> pl.Expr:
    """The column rounded to SIGNIFICANT_DIGITS significant digits."""
    return pl.col(column).round_sig_figs(SIGNIFICANT_DIGITS)
