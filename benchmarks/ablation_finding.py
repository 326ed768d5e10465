"""Does ablating FV heads hurt few-shot ICL more than ablating induction heads, and when in training?

    python benchmarks/ablation_finding.py                      # default toy suite, steps chosen around the induction jump
    python benchmarks/ablation_finding.py --steps 400,800,2000 --queries 50 --counts 2

Runs the full protocol of `dynamics.experiments.runner` on the toy suite (trained on first use,
`dynamics.toy.suite.ensure_suite`): per checkpoint, induction and FV head scores, clean few-shot
accuracy, the ablation grid (induction / FV / random ranking, mean and zero ablation, with and
without exclusion) with the token-loss score under ablation, and FV execution. Toy models have 4–8
heads, so every reference fraction (1 %–20 %) ablates exactly one head; `--counts` adds absolute head
counts to the grid. Prompts use `--shots` demonstrations (the reference's 10 do not fit the toy
models' 128-token context for most tasks); tasks whose prompts do not fit are left out.

Prints, per model and step: the top induction and FV heads, clean F1/top-1, F1 and token-loss under
each ranking (no exclusion; with ≤ 49 heads exclusion removes nothing), FV execution accuracies, and
the seconds the ICL experiments took (the cost the sweep adds per checkpoint).
"""

from __future__ import annotations

import argparse
import time

import polars as pl
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from dynamics.adapters import load_model
from dynamics.experiments.ablations import REFERENCE_FRACTIONS, AblationConfig, HeldoutTokens
from dynamics.experiments.few_shot import IclEvalConfig
from dynamics.experiments.runner import IclExperimentConfig, build_icl_inputs, run_icl_experiments
from dynamics.provenance import Provenance
from dynamics.scorers.function_vectors import (
    FunctionVectorConfig,
    build_function_vector_prompts,
    score_function_vector_heads,
)
from dynamics.scorers.induction import InductionConfig, make_probe, ordinary_token_ids, score_induction
from dynamics.tasks.builtin import builtin_tasks
from dynamics.toy.suite import ensure_suite, heldout_file, read_manifest, token_loss_positions
from jobs.sweep.targets import TOY_DEFAULTS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", help="toy suite preset")
    parser.add_argument("--models", help="comma-separated model names (default: all of the suite)")
    parser.add_argument("--steps", help="comma-separated steps (default: before, at and after the induction jump, final)")
    parser.add_argument("--shots", type=int, default=TOY_DEFAULTS["shots"], help="demonstrations per prompt (the toy sweep's)")
    parser.add_argument("--queries", type=int, default=TOY_DEFAULTS["icl_queries"], help="evaluation queries per task")
    parser.add_argument("--fv-prompts", type=int, default=24, help="clean and corrupted FV prompts per task")
    parser.add_argument("--counts", default="2", help="absolute head counts added to the grid ('' for none)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    return parser.parse_args()


def jump_steps(scores: list[dict], min_jump: float = 0.05) -> list[int]:
    """Steps before, at and after the induction jump (first step with ≥ half the best score), and the final one.

    Without a jump (best induction score within `min_jump` of the first), steps near 1/8, 1/4, 1/2 and all
    of training.
    """
    steps = [s["step"] for s in scores]
    best = max(s["induction_best"] for s in scores)
    if best - scores[0]["induction_best"] < min_jump:
        return sorted({min(steps, key=lambda s: abs(s - steps[-1] * share)) for share in (1 / 8, 1 / 4, 1 / 2, 1)})
    onset = next(s["step"] for s in scores if s["induction_best"] >= best / 2)
    before = max([s for s in steps if s <= onset // 2] or [steps[0]])
    after = min([s for s in steps if s >= 2 * onset] or [steps[-1]])
    return sorted({before, onset, after, steps[-1]})


def fitting_tasks(tokenizer, n_ctx: int, config: FunctionVectorConfig, max_new_tokens: int) -> dict:
    """The built-in tasks whose FV prompts leave room for generation in the context."""
    tasks = builtin_tasks()
    prompts = build_function_vector_prompts(tasks, tokenizer, config)
    limit = n_ctx - max_new_tokens + 1
    keep = [t.task for t in prompts.tasks if max(len(p.input_ids) for p in t.clean + t.corrupted) <= limit]
    return {name: tasks[name] for name in keep}


def summarise(model_name: str, step: int, scores: dict, ablations: pl.DataFrame, metrics: pl.DataFrame) -> dict:
    n_heads = scores["induction"].shape[1]
    top = {name: divmod(int(scores[name].argmax()), n_heads) for name in ("induction", "fv")}
    rows = ablations.filter(~pl.col("exclusion"))
    row = {"model": model_name, "step": step,
           "top_ind": f"{top['induction']} {float(scores['induction'].max()):.2f}",
           "top_fv": f"{top['fv']} {float(scores['fv'].max()):.3f}"}
    metric_values = dict(zip(metrics["metric"], metrics["value"]))
    row["clean_f1"] = metric_values["fewshot_f1"]
    row["clean_top1"] = metric_values["fewshot_top1"]
    one_head = rows.filter(pl.col("fraction") == REFERENCE_FRACTIONS[0])
    for method in ("mean", "zero"):
        for ranking in ("induction", "fv", "random"):
            cell = one_head.filter((pl.col("method") == method) & (pl.col("ranking") == ranking))
            row[f"{method[0]}_{ranking[:3]}_f1"] = cell.filter(pl.col("metric") == "f1")["value"].mean()
            if method == "mean":
                row[f"tl_{ranking[:3]}"] = cell.filter(pl.col("metric") == "icl_token_loss")["value"].mean()
    clean_tl = rows.filter((pl.col("fraction") == 0) & (pl.col("metric") == "icl_token_loss"))["value"].mean()
    row["tl_clean"] = clean_tl
    for count in sorted(set(rows["fraction"].to_list()) - set(REFERENCE_FRACTIONS) - {0.0}):
        for ranking in ("induction", "fv", "random"):
            cell = rows.filter((pl.col("fraction") == count) & (pl.col("method") == "mean") & (pl.col("ranking") == ranking))
            row[f"m_{ranking[:3]}_f1@{int(count)}"] = cell.filter(pl.col("metric") == "f1")["value"].mean()
    for name in ("zero_shot", "zero_shot_fv", "zero_shot_random_fv", "shuffled", "shuffled_fv", "shuffled_random_fv",
                 "n_queries"):
        row[f"fvx_{name}"] = metric_values[f"fv_exec_{name}"]
    return row


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = ensure_suite(args.preset)
    manifest = read_manifest(suite)
    early, late = token_loss_positions(manifest)
    heldout_rows = load_file(heldout_file(suite))["tokens"]
    counts = tuple(float(c) for c in args.counts.split(",") if c)
    config = IclExperimentConfig(
        evaluation=IclEvalConfig(n_shots=args.shots, n_queries=args.queries),
        ablation=AblationConfig(fractions=REFERENCE_FRACTIONS + counts),
    )
    fv_config = FunctionVectorConfig(n_shots=args.shots, n_clean=args.fv_prompts, n_corrupted=args.fv_prompts)
    induction_config = InductionConfig(n_sequences=200)
    names = args.models.split(",") if args.models else manifest["models"]
    summary = []
    for name in names:
        tokenizer = AutoTokenizer.from_pretrained(suite / name)
        scores_by_step = manifest["checkpoint_scores"][name]
        steps = [int(s) for s in args.steps.split(",")] if args.steps else jump_steps(scores_by_step)
        model = load_model(suite / name / f"step{steps[0]}")
        tasks = fitting_tasks(tokenizer, model.n_ctx, fv_config, config.evaluation.max_new_tokens)
        fv_prompts = build_function_vector_prompts(tasks, tokenizer, fv_config)
        inputs = build_icl_inputs(tasks, tokenizer, config, n_ctx=model.n_ctx,
                                  heldout=HeldoutTokens(heldout_rows, early, late))
        probe = make_probe(ordinary_token_ids(tokenizer), tokenizer.bos_token_id, induction_config)
        best = max(s["induction_best"] for s in scores_by_step)
        print(f"{name}: best induction score over training {best:.3f}; "
              f"{len(inputs.prompts.task_names)} tasks fit ({', '.join(inputs.prompts.task_names)}); steps {steps}")
        for step in steps:
            model.load_weights(suite / name / f"step{step}")
            started = time.perf_counter()
            scores = {"induction": score_induction(model, probe, induction_config).values["induction"]}
            fv = score_function_vector_heads(model, fv_prompts, fv_config)
            scores["fv"] = fv.fv
            scored = time.perf_counter()
            provenance = Provenance(f"toy/{name}", f"step{step}", step, "", "float32", model.attn_implementation,
                                    config.settings(inputs))
            result = run_icl_experiments(model, inputs, scores, fv.means, provenance, config)
            done = time.perf_counter()
            row = summarise(name, step, scores, result.ablations, result.checkpoint_metrics)
            row["score_s"], row["icl_s"] = round(scored - started, 1), round(done - scored, 1)
            summary.append(row)
            print(pl.DataFrame([row]).transpose(include_header=True).rows(), flush=True)
    table = pl.DataFrame(summary)
    with pl.Config(tbl_rows=100, tbl_cols=100, tbl_width_chars=250, float_precision=3):
        print(table.select("model", "step", "top_ind", "top_fv", "clean_f1", "clean_top1",
                           "m_ind_f1", "m_fv_f1", "m_ran_f1", "z_ind_f1", "z_fv_f1", "z_ran_f1", "icl_s"))
        print(table.select("model", "step", "tl_clean", "tl_ind", "tl_fv", "tl_ran",
                           *[c for c in table.columns if "@" in c]))
        print(table.select("model", "step", *[c for c in table.columns if c.startswith("fvx_")]))


if __name__ == "__main__":
    main()
