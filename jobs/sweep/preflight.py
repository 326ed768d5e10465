"""What a sweep can check about a local run before Ray starts: prompts against the context, the held-out text.

A local run's (and the toy suite's) tokenizer and config.json are on disk, so the driver knows, in seconds
and before any actor loads a model, which FV and few-shot evaluation tasks have prompts longer than the
model's context. Those tasks are left out by name: the target's settings (and so its settings hash and
every stored row) say which were scored and which were not, and the console summary lists them. When no
task fits, or the held-out text gives no row for this tokenizer, the sweep stops here with one line.

Prompts are drawn per task (`dynamics.tasks.prompts.task_rng`), so the actors, which draw them again,
keep exactly the tasks kept here; a Hub model's tokenizer is not on disk yet, and its actors fail a
checkpoint (recorded, with the tasks named) rather than leave tasks out unsaid (`ModelTarget.build_scorer`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from dynamics.adapters import context_length
from dynamics.errors import InputError
from dynamics.experiments.few_shot import build_eval_prompts
from dynamics.heldout import load_heldout_tokens
from dynamics.scorers.function_vectors import build_function_vector_prompts
from dynamics.sources.checkpoints import LocalSource
from dynamics.tasks.prompts import PromptSet

if TYPE_CHECKING:  # targets.py calls preflight()
    from jobs.sweep.targets import ModelTarget


def preflight(target: ModelTarget) -> ModelTarget:
    """`target` with the tasks whose prompts do not fit its context left out (named); raises when none fits
    or the held-out text is too short. Hub targets pass through unchanged."""
    if target.source != "local":
        return target
    tokenizer, n_ctx = _tokenizer_and_context(target)
    target = replace(target, context_tokens=n_ctx, left_out_tasks=_left_out_fv_tasks(target, tokenizer, n_ctx),
                     left_out_evaluation_tasks=_left_out_evaluation_tasks(target, tokenizer, n_ctx))
    if target.heldout_path:
        load_heldout_tokens(Path(target.heldout_path), tokenizer, target.scoring.token_loss.late + 2)
    return target


def _tokenizer_and_context(target: ModelTarget) -> tuple[object, int]:
    from transformers import AutoConfig, AutoTokenizer

    source = LocalSource(Path(target.location), skip_unparsed=True)  # folder names were checked already
    config_file = source.config_file(list(target.revisions))
    tokenizer = AutoTokenizer.from_pretrained(source.tokenizer_dir(config_file.parent.name), trust_remote_code=False)
    return tokenizer, context_length(AutoConfig.from_pretrained(config_file.parent, trust_remote_code=False))


def _left_out_fv_tasks(target: ModelTarget, tokenizer, n_ctx: int) -> tuple[str, ...]:
    config = target.scoring.function_vectors
    if config is None:
        return ()
    prompts = build_function_vector_prompts(target.tasks(), tokenizer, config)
    kept = prompts.fitting(n_ctx).task_names
    if not kept:
        raise InputError(f"{target.model_id}: no FV task's {config.n_shots}-shot prompts fit the model's {n_ctx}-token "
                         f"context (the shortest task's longest prompt has {_shortest(prompts)} tokens); lower --shots, "
                         "or pass --no-fv")
    return tuple(name for name in prompts.task_names if name not in kept)


def _left_out_evaluation_tasks(target: ModelTarget, tokenizer, n_ctx: int) -> tuple[str, ...]:
    if target.scoring.icl is None:
        return ()
    config = target.scoring.icl.evaluation
    prompts = build_eval_prompts(target.evaluation_tasks(), tokenizer, config)
    try:
        kept = prompts.fitting(n_ctx, config.max_new_tokens).few_shot.task_names
    except InputError as err:  # none fits
        raise InputError(f"{target.model_id}: no few-shot evaluation task's {config.n_shots}-shot prompts fit the "
                         f"model's {n_ctx}-token context with {config.max_new_tokens} tokens left to answer in (the "
                         f"shortest task's longest prompt has {_shortest(prompts.few_shot)} tokens); lower --shots, "
                         "or pass --no-icl") from err
    return tuple(name for name in prompts.few_shot.task_names if name not in kept)


def _shortest(prompts: PromptSet) -> int:
    """The longest prompt of the task whose longest prompt is shortest: what a context must hold for one task."""
    return min(max(len(p.input_ids) for kind in ("clean", "corrupted") for p in task.prompts(kind))
               for task in prompts.tasks)
