"""What the embedded default's warehouse shows: both mechanisms, in order, strong enough to measure.

    python -m benchmarks.organism                      # the warehouse `make run` wrote ($DYNAMICS_HOME)
    python -m benchmarks.organism --warehouse W.duckdb

Reads the analysis views (warehouse/sql/analysis.sql; nothing is recomputed here) and prints, per model,
one `model figure=value` line per figure, each with the target it is checked against, then a closing
line with how many targets were met:
- best induction score at the first step (< 0.05) and at the last (≥ 0.25);
- best FV score at the last step (≥ 0.05, and ≥ 10× the median |FV| of that step's heads), with its
  standard error;
- few-shot top-1 accuracy on held-out queries at the last step (≥ 0.6), and with shuffled labels (≤ half);
- the first step each mechanism appears (an induction head at 0.25, an FV head at 0.05; both must be
  significant): induction first;
- the heads that were induction heads at an earlier step and are significant FV heads at the last
  (reported, no target);
- the ablation finding at the last step: accuracy with the top FV, induction or random heads mean-ablated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from dynamics.home import dynamics_home
from warehouse import queries

# emergence thresholds of the issue that made the organism: an induction head at 0.25 (half a perfect
# head's score), an FV head at 0.05 (~3x the top FV head of pythia-6.9b)
THRESHOLDS = {"induction_floor": 0.25, "fv_floor": 0.05, "z": 3.0}


def model_figures(warehouse: Path, model: str, top_fraction: float,
                  min_top_heads: int) -> tuple[list[tuple[str, object, str, bool]], list[str]]:
    """(figure, value, target, met) rows and extra lines (transitions, ablations) for one model's current setup."""
    rule = {**THRESHOLDS, "top_fraction": top_fraction, "min_top_heads": min_top_heads}
    curves = queries.phase_change(warehouse, model, current=True)
    by_metric = {m: part.sort("step") for (m,), part in curves.group_by("metric")}
    first_step, last_step = int(curves["step"].min()), int(curves["step"].max())

    def at(metric: str, step: int) -> float | None:
        values = by_metric.get(metric, pl.DataFrame({"step": [], "value": []})).filter(pl.col("step") == step)["value"]
        return None if values.is_empty() else float(values[0])

    final = queries.head_trajectories(warehouse, model, current=True, **rule).filter(pl.col("step") == last_step)
    best_fv = final.sort("fv", descending=True, nulls_last=True).row(0, named=True)
    median_fv = float(final["fv"].abs().median())
    emergence = queries.mechanism_emergence(warehouse, model, current=True, **rule).row(0, named=True)
    accuracy, shuffled = at("fewshot_top1", last_step), at("fewshot_shuffled_top1", last_step)
    rows = [
        ("induction_best_first_step", at("max_induction", first_step), "< 0.05", _lt(at("max_induction", first_step), 0.05)),
        ("induction_best_last_step", at("max_induction", last_step), "≥ 0.25", _ge(at("max_induction", last_step), 0.25)),
        ("fv_best_last_step", best_fv["fv"], "≥ 0.05", _ge(best_fv["fv"], 0.05)),
        ("fv_best_stderr", best_fv["fv_stderr"], f"score > {THRESHOLDS['z']:g} standard errors", best_fv["fv_significant"]),
        ("fv_best_over_median_abs", best_fv["fv"] / median_fv if median_fv else None, "≥ 10",
         _ge(best_fv["fv"] / median_fv if median_fv else None, 10)),
        ("fewshot_top1_last_step", accuracy, "≥ 0.6", _ge(accuracy, 0.6)),
        ("fewshot_shuffled_top1_last_step", shuffled, "≤ half the clean accuracy",
         accuracy is not None and shuffled is not None and shuffled <= accuracy / 2),
        ("induction_emerges_step", emergence["induction_step"], "an induction head ≥ 0.25",
         emergence["induction_step"] is not None),
        ("fv_emerges_step", emergence["fv_step"], "an FV head ≥ 0.05", emergence["fv_step"] is not None),
        ("emergence_order", emergence["emergence_order"], "induction first", emergence["emergence_order"] == "induction first"),
    ]
    lines = [f"  best FV head at step {last_step}: L{best_fv['layer']}H{best_fv['head']}"]
    transitions = queries.induction_to_fv_transitions(warehouse, model, current=True, **rule)
    lines.append(f"  {model} induction_to_fv_heads={transitions.height}  (reported: FV heads at the last step, "
                 "significant, that were induction heads before)")
    for row in transitions.iter_rows(named=True):
        lines.append(f"  induction → FV: L{row['layer']}H{row['head']} an induction head from step "
                     f"{row['first_induction_head_step']} (peak {row['peak_induction']:.3f} at step "
                     f"{row['peak_induction_step']}); at step {row['final_step']} induction {row['final_induction']:.3f}, "
                     f"FV {row['final_fv']:.3f} ± {row['final_fv_stderr']:.3f}")
    lines += ablation_lines(warehouse, model)
    return rows, lines


def ablation_lines(warehouse: Path, model: str) -> list[str]:
    """Few-shot accuracy at the last ablated step with the top heads of each ranking mean-ablated."""
    curves = queries.ablation_curves(warehouse, model)
    if curves.is_empty():
        return ["  ablations: none in this warehouse (run the sweep with ablations at the last step)"]
    step, metric = int(curves["step"][0]), curves["metric"][0]
    lines = [f"  ablations at step {step} (mean ablation, few-shot {metric} averaged over tasks; heads ablated → accuracy):"]
    for (ranking, exclusion), part in curves.sort("n_ablated").group_by("ranking", "exclusion", maintain_order=True):
        # a ranking ablates only heads that qualify, so several grid points can ablate the same heads
        distinct = part.with_columns(pl.col("n_ablated").fill_null(0)).unique("n_ablated", keep="first", maintain_order=True)
        points = ", ".join(f"{n} → {v:.3f}" for n, v in zip(distinct["n_ablated"], distinct["value"]))
        lines.append(f"    {ranking:<9} {'with' if exclusion else 'without'} exclusion: {points}")
    return lines


def _ge(value: float | None, bound: float) -> bool:
    return value is not None and value >= bound


def _lt(value: float | None, bound: float) -> bool:
    return value is not None and value < bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, help="default: $DYNAMICS_HOME/warehouse.duckdb (what `make run` wrote)")
    parser.add_argument("--model-prefix", default="toy/", help="models to report (default: the toy suite's)")
    parser.add_argument("--top-fraction", type=float, default=0.02,
                        help="top sets for emergence and transitions, a fraction of the heads (default 0.02) ...")
    parser.add_argument("--min-top-heads", type=int, default=2,
                        help="... but at least this many (default 2: 2 %% of a dozen heads rounds to one)")
    args = parser.parse_args(argv)
    warehouse = args.warehouse or dynamics_home() / "warehouse.duckdb"
    models = [m for m in queries.scored_models(warehouse)["model"].to_list() if m.startswith(args.model_prefix)]
    if not models:
        print(f"no {args.model_prefix}* model in {warehouse}; run `make run` first", file=sys.stderr)
        return 2
    print(f"warehouse {warehouse}; thresholds: induction head ≥ {THRESHOLDS['induction_floor']}, FV head ≥ "
          f"{THRESHOLDS['fv_floor']}, both > {THRESHOLDS['z']:g} standard errors, in the top {args.top_fraction:g} "
          f"of heads (at least {args.min_top_heads})")
    met = total = 0
    for model in models:
        rows, lines = model_figures(warehouse, model, args.top_fraction, args.min_top_heads)
        for figure, value, target, ok in rows:
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"{model} {figure}={shown}  (target {target}: {'met' if ok else 'NOT met'})")
            met, total = met + ok, total + 1
        print("\n".join(lines))
    print(f"targets met: {met} of {total}")
    return 0 if met == total else 1


if __name__ == "__main__":
    sys.exit(main())
