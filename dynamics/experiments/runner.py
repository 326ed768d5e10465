"""Per-checkpoint ICL experiments: few-shot accuracy, the head-ablation grid and FV execution.

The sweep builds `IclInputs` once per model (prompts are tokenized once, held-out rows loaded once) and
calls `run_icl_experiments` for every checkpoint, after the head scores:

    inputs = build_icl_inputs(evaluation_tasks(), tokenizer, config, n_ctx=model.n_ctx, heldout=heldout)
    result = run_icl_experiments(model, inputs, {"induction": ..., "fv": ...}, fv.means, provenance, config)
    result.ablations           # rows of the `ablations` table
    result.checkpoint_metrics  # fewshot_f1, fewshot_top1, fewshot_shuffled_top1, fv_exec_* rows
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from torch import Tensor

from dynamics.adapters import LoadedModel
from dynamics.errors import InputError
from dynamics.experiments.ablations import (
    ABLATION_SCHEMA,
    AblationConfig,
    HeldoutTokens,
    cross_task_mean,
    run_ablation_grid,
)
from dynamics.experiments.few_shot import (
    IclEvalConfig,
    IclEvalPrompts,
    build_eval_prompts,
    evaluate_few_shot,
    first_token_correct,
)
from dynamics.experiments.function_vector_execution import (
    FunctionVectorExecutionConfig,
    execute_function_vectors,
)
from dynamics.provenance import Provenance
from dynamics.rows import checkpoint_metric_rows
from dynamics.scorers.function_vectors import mean_head_activations
from dynamics.tasks.base import IclTask

logger = logging.getLogger(__name__)

MEAN_SOURCES = ("fv_prompts", "evaluation_prompts")


@dataclass(frozen=True)
class IclExperimentConfig:
    """What to run per checkpoint; `ablation` or `function_vector_execution` None skips that part.

    `means_from` says where the mean-ablation / FV values come from: the FV scoring prompts (the
    reference: the 29 FV tasks' μ^τ, passed in) or the evaluation prompts' clean few-shot prompts
    (computed here; for runs without FV scoring).
    """

    evaluation: IclEvalConfig = field(default_factory=IclEvalConfig)
    ablation: AblationConfig | None = field(default_factory=AblationConfig)
    function_vector_execution: FunctionVectorExecutionConfig | None = field(default_factory=FunctionVectorExecutionConfig)
    means_from: str = "fv_prompts"

    def __post_init__(self) -> None:
        if self.means_from not in MEAN_SOURCES:
            raise InputError(f"means_from must be one of {', '.join(MEAN_SOURCES)} (got {self.means_from!r})")

    def settings(self, inputs: IclInputs | None = None) -> dict:
        """Provenance of the results; with `inputs`, their prompt hashes and held-out positions too."""
        settings = {
            "evaluation": self.evaluation.settings(),
            "ablation": None if self.ablation is None else self.ablation.settings(),
            "function_vector_execution": None if self.function_vector_execution is None
            else self.function_vector_execution.settings(),
            "means_from": self.means_from,
        }
        if inputs is not None:
            settings["prompts"] = inputs.prompts.settings()
            if inputs.heldout is not None:
                settings["heldout"] = {"rows": inputs.heldout.tokens.shape[0], "early": inputs.heldout.early,
                                       "late": inputs.heldout.late}
        return settings


@dataclass(frozen=True)
class IclInputs:
    """Everything model-independent: tokenized evaluation prompts and held-out rows."""

    prompts: IclEvalPrompts
    heldout: HeldoutTokens | None = None


def build_icl_inputs(
    tasks: Mapping[str, IclTask], tokenizer, config: IclExperimentConfig = IclExperimentConfig(),
    *, n_ctx: int | None = None, heldout: HeldoutTokens | None = None,
) -> IclInputs:
    """Tokenize the evaluation prompts once; with `n_ctx`, keep only the tasks whose prompts fit it."""
    prompts = build_eval_prompts(tasks, tokenizer, config.evaluation)
    if n_ctx is not None:
        fitting = prompts.fitting(n_ctx, config.evaluation.max_new_tokens)
        dropped = sorted(set(prompts.task_names) - set(fitting.task_names))
        if dropped:
            logger.warning("%d evaluation task(s) do not fit a %d-token context and are left out: %s",
                           len(dropped), n_ctx, ", ".join(dropped))
        prompts = fitting
    return IclInputs(prompts, heldout)


@dataclass(frozen=True)
class IclResults:
    ablations: pl.DataFrame  # `ablations` rows (empty when ablations are off)
    checkpoint_metrics: pl.DataFrame  # fewshot_f1, fewshot_top1 and fv_exec_* rows


def run_icl_experiments(
    model: LoadedModel,
    inputs: IclInputs,
    head_scores: Mapping[str, Tensor],
    means: Tensor | None,
    provenance: Provenance,
    config: IclExperimentConfig = IclExperimentConfig(),
    head_stderr: Mapping[str, Tensor] | None = None,
) -> IclResults:
    """Few-shot accuracy, the ablation grid and FV execution for one checkpoint.

    Args:
        head_scores: {'induction': (layer, head), 'fv': (layer, head)} of this checkpoint; 'fv' is needed
            for FV ranking, induction-with-exclusion and FV execution.
        means: μ^τ (task, layer, head, d_head) from FV scoring when `config.means_from == 'fv_prompts'`;
            None when 'evaluation_prompts'.
        head_stderr: the standard errors of `head_scores`; given, ablation rankings take only heads that
            qualify as induction / FV heads.
    """
    inputs.prompts.few_shot.check_fits(model.n_ctx)
    if (means is None) != (config.means_from == "evaluation_prompts"):
        raise InputError(
            f"means_from={config.means_from!r} but means were {'not ' if means is None else ''}given; pass the FV "
            "scorer's means with 'fv_prompts', or none with 'evaluation_prompts'"
        )
    if means is None:
        means = mean_head_activations(model, inputs.prompts.few_shot)
    mean_values = cross_task_mean(model, means)
    clean = evaluate_few_shot(model, inputs.prompts, config.evaluation)
    metrics = {f"fewshot_{name}": value for name, value in clean.model_means().items()}
    # the same demonstrations with their labels permuted: how much of the accuracy the pairings carry
    shuffled = first_token_correct(model, [t.corrupted for t in inputs.prompts.few_shot.tasks],
                                   config.evaluation.batch_size)
    metrics["fewshot_shuffled_top1"] = float(np.mean([float(c.mean()) for c in shuffled]))  # as model_means
    ablations = pl.DataFrame(schema=ABLATION_SCHEMA)
    if config.ablation is not None:
        ablations = run_ablation_grid(model, inputs.prompts, head_scores, mean_values, provenance, config.ablation,
                                      config.evaluation, inputs.heldout, clean, head_stderr)
    if config.function_vector_execution is not None:
        if "fv" not in head_scores:
            raise InputError("FV execution needs the 'fv' head score; score FV heads or set function_vector_execution=None")
        metrics |= execute_function_vectors(model, inputs.prompts, head_scores["fv"], mean_values, clean.top1,
                                            config.function_vector_execution)
    return IclResults(ablations, checkpoint_metric_rows(metrics, provenance))
