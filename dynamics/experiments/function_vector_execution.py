"""Function-vector execution (docs/methods.md, "FV execution"): does adding the top FV heads' mean output restore a task?

The function vector is FV = Σ over the top n = ⌈max(1, M·N)⌉ heads by FV score of o_proj_l(e_h ⊗ μ̄_{l,h}),
where e_h ⊗ μ̄ is zero except head h's slice, which holds the head's cross-task mean activation
(mean over tasks of μ^τ). Calling o_proj adds its bias, so the layer bias is counted once per selected
head — the reference's quirk (Todd et al.'s code does the same for GPT-NeoX), kept. One task-agnostic
vector serves every evaluation task, as in the reference.

FV is added to the residual stream leaving block ⌊L/3⌋ at the last prompt position, in one forward, and
the metric is top-1 accuracy of the target's first token on zero-shot prompts and on 10-shot prompts
with shuffled labels, each with and without FV, and with a vector built from random heads (the
reference ranks uniform noise, `torch.rand_like`; here a seeded generator). As in the reference, only
queries the model answers correctly (top-1) from clean few-shot prompts are kept. Our prompts differ in
one point: the shuffled prompt reuses the clean prompt's demonstrations with permuted labels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from dynamics.adapters import LoadedModel, hooks
from dynamics.errors import InputError
from dynamics.experiments.ablations import Head, rank_heads
from dynamics.experiments.few_shot import IclEvalPrompts, Intervention, first_token_correct
from dynamics.tasks.prompts import EncodedPrompt

METRIC_PREFIX = "fv_exec_"


@dataclass(frozen=True)
class FunctionVectorExecutionConfig:
    head_fraction: float = 0.02  # M of scripts/eval_fv.sh
    seed: int = 42  # the random-head baseline
    filter_correct: bool = True  # keep queries the clean few-shot prompt answers correctly (top-1)
    batch_size: int = 32  # results do not depend on it

    def __post_init__(self) -> None:
        if not 0 < self.head_fraction <= 1:
            raise InputError(f"head_fraction must be in (0, 1] (got {self.head_fraction}); 0.02 is the reference's")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1 (got {self.batch_size})")

    def settings(self) -> dict:
        settings = {k: v for k, v in asdict(self).items() if k != "batch_size"}
        return {**settings, "injection": "block_output_floor_L_over_3_last_position", "bias": "once_per_head"}


def function_vector_heads(scores: Tensor, head_fraction: float) -> list[Head]:
    """The top ⌈max(1, head_fraction·N)⌉ heads of a (layer, head) score."""
    n = math.ceil(max(1.0, scores.numel() * head_fraction))
    return rank_heads(scores)[:n]


def random_function_vector_heads(n_layers: int, n_heads: int, head_fraction: float, seed: int) -> list[Head]:
    """As `function_vector_heads`, ranking seeded uniform noise."""
    noise = torch.rand(n_layers, n_heads, generator=torch.Generator().manual_seed(seed))
    return function_vector_heads(noise, head_fraction)


@torch.no_grad()
def build_function_vector(model: LoadedModel, heads: Sequence[Head], mean_values: Tensor) -> Tensor:
    """Σ_heads o_proj_l(e_h ⊗ μ̄_{l,h}), (d_model,); o_proj's bias is added once per head (reference quirk)."""
    vector = torch.zeros(model.d_model, dtype=torch.float32, device=model.device)
    for layer, head in heads:
        z = torch.zeros(1, model.n_heads * model.d_head, dtype=model.dtype, device=model.device)  # (1, head·d_head)
        z[0, model.head_slice(head)] = mean_values[layer, head].to(z)
        vector += model.o_proj(layer)(z)[0].float()
    return vector


def injection_layer(model: LoadedModel) -> int:
    return model.n_layers // 3


def add_at_last_position(model: LoadedModel, layer: int, vector: Tensor) -> Intervention:
    """Add `vector` (d_model,) to block `layer`'s output at each row's last processed position."""

    def intervention(positions: Tensor) -> contextlib.AbstractContextManager:
        rows = torch.arange(len(positions), device=model.device)

        def hook(_module, _args, output: Tensor) -> Tensor:
            output = output.clone()  # (batch, pos, d_model)
            output[rows, positions] += vector.to(output.dtype)
            return output

        return hooks([model.blocks[layer].register_forward_hook(hook)])

    return intervention


def _accuracy(correct: list[Tensor]) -> float:
    """Mean over tasks (with at least one kept query) of the per-task accuracy; NaN if none kept."""
    per_task = [float(c.float().mean()) for c in correct if len(c)]
    return float(np.mean(per_task)) if per_task else math.nan


def execute_function_vectors(
    model: LoadedModel,
    prompts: IclEvalPrompts,
    fv_scores: Tensor,
    mean_values: Tensor,
    clean_top1: Mapping[str, Tensor] | None,
    config: FunctionVectorExecutionConfig = FunctionVectorExecutionConfig(),
) -> dict[str, float]:
    """Model-level FV-execution metrics for `checkpoint_metrics`.

    Args:
        fv_scores: (layer, head) FV scores of this checkpoint.
        mean_values: (layer, head, d_head) cross-task mean activations.
        clean_top1: per task, (query,) clean few-shot top-1 correctness (`IclAccuracy.top1`), used as the
            filter; None computes it.
    Returns:
        fv_exec_{zero_shot,shuffled}{,_fv,_random_fv} accuracies and fv_exec_n_queries (queries kept).
    """
    clean = [t.clean for t in prompts.few_shot.tasks]
    if not config.filter_correct:
        keep = [torch.ones(len(t), dtype=torch.bool) for t in clean]
    elif clean_top1 is not None:
        keep = [clean_top1[name] == 1 for name in prompts.task_names]
    else:
        keep = [correct == 1 for correct in first_token_correct(model, clean, config.batch_size)]

    def kept(tasks: Sequence[Sequence[EncodedPrompt]]) -> list[list[EncodedPrompt]]:
        return [[p for p, k in zip(task, mask.tolist()) if k] for task, mask in zip(tasks, keep)]

    conditions = {"zero_shot": kept(prompts.zero_shot), "shuffled": kept([t.corrupted for t in prompts.few_shot.tasks])}
    layer = injection_layer(model)
    random_heads = random_function_vector_heads(model.n_layers, model.n_heads, config.head_fraction, config.seed)
    vectors = {
        "": None,
        "_fv": build_function_vector(model, function_vector_heads(fv_scores, config.head_fraction), mean_values),
        "_random_fv": build_function_vector(model, random_heads, mean_values),
    }
    metrics = {f"{METRIC_PREFIX}n_queries": float(sum(int(k.sum()) for k in keep))}
    for condition, task_prompts in conditions.items():
        for suffix, vector in vectors.items():
            intervention = None if vector is None else add_at_last_position(model, layer, vector)
            correct = first_token_correct(model, task_prompts, config.batch_size, intervention)
            metrics[f"{METRIC_PREFIX}{condition}{suffix}"] = _accuracy(correct)
    return metrics
