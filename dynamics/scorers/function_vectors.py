"""Function-vector (FV) head scores: the average indirect effect of Todd et al., as Yin & Steinhardt run it.

Definitions (docs/methods.md, "Function-vector score"): μ^τ_{l,h} is head (l, h)'s output z at the last
position, averaged over the task's clean prompts ("Mean activations"). For each label-shuffled prompt c
with target token y*,
    IE^τ_c(l, h) = softmax(logits_patched[T−1])[y*] − softmax(logits(c)[T−1])[y*],
where "patched" replaces head h's slice of layer l's o_proj input at the last position only with
μ^τ_{l,h} ("Indirect effect"). FV(l, h) is the mean over trials, then over tasks with equal weights
("FV aggregation").

Two implementations give the same numbers:
- `score_function_vectors_reference`: the reference's loop, one full batch-1 forward per head per trial.
- `score_function_vectors`: the one the service runs. Prompts are batched (right padding + mask); the
  unpatched pass keeps the prefix keys/values, the residual entering each block at the last position
  and p₀; a row patching (l, h) starts from that residual at block l and reruns blocks l…L−1 for the
  last token only, with attention against the shared prefix (`shared_prefix.py`) — docs/methods.md,
  "Fast exact algorithm" (why it is exact) and docs/performance.md (what it saves).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from dynamics.adapters import LoadedModel, hooks
from dynamics.errors import InputError
from dynamics.scorers.estimates import mean_and_stderr
from dynamics.scorers.shared_prefix import (
    SHARED_PREFIX_ATTENTION,
    SharedPrefix,
    register_shared_prefix_attention,
)
from dynamics.tasks.base import IclTask
from dynamics.tasks.prompts import EncodedPrompt, PromptSet, build_prompt_set, length_sorted_batches, padded_batch

logger = logging.getLogger(__name__)

# Steps ≤ EARLY_STEP run in fp32 on GPU: fp16 attention underflows on early checkpoints (docs/methods.md, "Precision").
EARLY_STEP = 1000


@dataclass(frozen=True)
class FunctionVectorConfig:
    n_shots: int = 10
    n_clean: int = 100  # clean prompts per task, for the mean activations
    n_corrupted: int = 100  # label-shuffled prompts per task, for the indirect effect
    seed: int = 42  # prompt sampling seed
    batch_size: int = 16  # prompts per forward; the fast path then runs batch_size·L·H single-token rows
    unembed_rows: int = 4096  # patched rows per unembedding call (bounds the rows × vocab logits)

    def __post_init__(self) -> None:
        problems = [f"{name} must be at least 1 (got {value})" for name, value in
                    (("n_clean", self.n_clean), ("n_corrupted", self.n_corrupted),
                     ("batch_size", self.batch_size), ("unembed_rows", self.unembed_rows)) if value < 1]
        if self.n_shots < 0:
            problems.append(f"n_shots must be at least 0 (got {self.n_shots})")
        if problems:
            raise InputError(f"FunctionVectorConfig: {'; '.join(problems)}")

    def settings(self) -> dict:
        """What the stored scores depend on: the definition and the prompt parameters (batch sizes excluded)."""
        definition = {"metric": "fv", "patch": "last_position_task_mean", "measure": "first_token_probability_difference"}
        prompts = {k: v for k, v in asdict(self).items() if k not in ("batch_size", "unembed_rows")}
        return {**definition, **prompts}


@dataclass(frozen=True)
class FunctionVectorScores:
    """FV scores and what they were computed from."""

    fv: Tensor  # (layer, head): mean over tasks of per_task
    per_task: dict[str, Tensor]  # task -> (layer, head): mean indirect effect over the task's trials
    means: Tensor  # (task, layer, head, d_head): μ^τ, fp32
    dtype: torch.dtype  # weights' dtype the scores were computed in
    stderr: Tensor  # (layer, head): standard error of fv, over trials (docs/methods.md, "Standard errors")
    per_task_stderr: dict[str, Tensor]  # task -> (layer, head): standard error of per_task[task]

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.fv).all()) and all(bool(torch.isfinite(t).all()) for t in self.per_task.values())


def build_function_vector_prompts(
    tasks: Mapping[str, IclTask], tokenizer, config: FunctionVectorConfig, names: Sequence[str] | None = None
) -> PromptSet:
    """The prompt set `config` describes, for the named tasks (build once, reuse for every checkpoint)."""
    return build_prompt_set(
        tasks, tokenizer, names=names, n_shots=config.n_shots, n_clean=config.n_clean,
        n_corrupted=config.n_corrupted, seed=config.seed,
    )


def choose_dtype(step: int | None, device: torch.device | str) -> torch.dtype:
    """Weights' dtype for scoring a checkpoint: fp32 on CPU and for early (or unknown) steps, else bf16.

    The attention and output softmaxes run in fp32 whatever the weights' dtype.
    """
    if torch.device(device).type != "cuda" or step is None or step <= EARLY_STEP:
        return torch.float32
    return torch.bfloat16


# --- the unpatched pass ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _UnpatchedPass:
    """What one batched, unpatched forward leaves for the scorers (all at each row's last real token)."""

    last: Tensor  # (batch,) index of the last real token
    z: Tensor  # (batch, layer, head, d_head) o_proj input
    residual: Tensor  # (batch, layer, d_model) residual stream entering each block
    final: Tensor  # (batch, d_model) residual stream entering the final norm
    prefix: list[SharedPrefix] | None  # per layer: keys/values at positions 0..T−2


def _run_unpatched(model: LoadedModel, prompts: Sequence[EncodedPrompt], keep_prefix: bool) -> _UnpatchedPass:
    ids, lengths = padded_batch(prompts, model.device)  # (batch, pos), (batch,)
    batch, n_pos = ids.shape
    last = lengths - 1
    rows = torch.arange(batch, device=model.device)
    z: list[Tensor] = [None] * model.n_layers
    residual: list[Tensor] = [None] * model.n_layers
    final: list[Tensor] = []

    def at_last(store: list, index: int | None):
        def hook(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]  # (batch, pos, width)
            if index is None:
                store.append(hidden[rows, last])
            else:
                store[index] = hidden[rows, last]

        return hook

    final_norm = model.model.get_submodule(model.family.final_norm)
    handles = [final_norm.register_forward_pre_hook(at_last(final, None), with_kwargs=True)]
    for layer in range(model.n_layers):
        handles.append(model.o_proj(layer).register_forward_pre_hook(at_last(z, layer), with_kwargs=True))
        handles.append(model.blocks[layer].register_forward_pre_hook(at_last(residual, layer), with_kwargs=True))
    attention_mask = (torch.arange(n_pos, device=model.device)[None, :] < lengths[:, None]).long()  # (batch, pos)
    with hooks(handles):
        out = model.model.base_model(input_ids=ids, attention_mask=attention_mask, use_cache=keep_prefix)
    prefix = None
    if keep_prefix:
        # Positions ≥ a row's last token are its own last token or padding: masked out of the prefix.
        valid = torch.arange(n_pos - 1, device=model.device)[None, :] < last[:, None]  # (batch, prefix_pos)
        prefix = [
            SharedPrefix(layer.keys[:, :, : n_pos - 1], layer.values[:, :, : n_pos - 1], valid)
            for layer in out.cache.layers
        ]
    return _UnpatchedPass(
        last=last,
        z=torch.stack(z, dim=1).view(batch, model.n_layers, model.n_heads, model.d_head),
        residual=torch.stack(residual, dim=1),
        final=final[0],
        prefix=prefix,
    )


def _target_probability(logits: Tensor, target_ids: Tensor) -> Tensor:
    """softmax(logits)[target] per row, in fp32. logits (rows, vocab), target_ids (rows,) → (rows,).

    Computed as exp(logit − logsumexp): the same number without writing out the whole softmax.
    """
    logits = logits.float()
    return torch.exp(logits.gather(-1, target_ids[:, None])[:, 0] - torch.logsumexp(logits, dim=-1))


# --- mean activations -----------------------------------------------------------------------------


@torch.no_grad()
def mean_head_activations(
    model: LoadedModel, prompt_set: PromptSet, config: FunctionVectorConfig = FunctionVectorConfig()
) -> Tensor:
    """μ^τ: each head's last-position output averaged over the task's clean prompts, (task, layer, head, d_head).

    Accumulated in fp32 and returned on the CPU.
    """
    prompt_set.check_fits(model.n_ctx)
    shape = (len(prompt_set.tasks), model.n_layers, model.n_heads, model.d_head)
    sums = torch.zeros(shape, dtype=torch.float32, device=model.device)
    for batch in length_sorted_batches([t.clean for t in prompt_set.tasks], config.batch_size):
        run = _run_unpatched(model, [p for _, _, p in batch], keep_prefix=False)
        task_index = torch.tensor([t for t, _, _ in batch], device=model.device)
        sums.index_add_(0, task_index, run.z.float())
    counts = torch.tensor([len(task.clean) for task in prompt_set.tasks], dtype=torch.float32, device=model.device)
    return (sums / counts[:, None, None, None]).cpu()


def _check_means(model: LoadedModel, prompt_set: PromptSet, means: Tensor) -> None:
    expected = (len(prompt_set.tasks), model.n_layers, model.n_heads, model.d_head)
    if tuple(means.shape) != expected:
        raise InputError(
            f"means has shape {tuple(means.shape)}, expected {expected} (task, layer, head, d_head) for this model "
            "and prompt set; compute them with mean_head_activations(model, prompt_set)"
        )


def _aggregate(prompt_set: PromptSet, effects: list[Tensor], means: Tensor, dtype: torch.dtype) -> FunctionVectorScores:
    """Mean over trials per task, then the equal-weight mean over tasks. effects[t] is (trial, layer, head).

    The tasks' trials are independent samples, so the standard error of the mean over T tasks is
    √(Σ_t se_t²) / T, with se_t the standard error of task t's mean.
    """
    estimates = {task.task: mean_and_stderr(effect, dim=0) for task, effect in zip(prompt_set.tasks, effects)}
    per_task = {name: mean for name, (mean, _) in estimates.items()}
    per_task_stderr = {name: stderr for name, (_, stderr) in estimates.items()}
    fv = torch.stack(list(per_task.values())).mean(dim=0)  # (layer, head)
    stderr = torch.stack(list(per_task_stderr.values())).pow(2).sum(dim=0).sqrt() / len(per_task)
    return FunctionVectorScores(
        fv=fv.float(), per_task={k: v.float() for k, v in per_task.items()}, means=means, dtype=dtype,
        stderr=stderr.float(), per_task_stderr={k: v.float() for k, v in per_task_stderr.items()},
    )


# --- the reference loop (oracle) ------------------------------------------------------------------


def _last_position_probability(model: LoadedModel, prompt: EncodedPrompt) -> float:
    ids = torch.tensor([prompt.input_ids], device=model.device)  # (1, pos)
    logits = model.model(input_ids=ids).logits[:, -1]  # (1, vocab)
    target = torch.tensor([prompt.target_id], device=model.device)
    return float(_target_probability(logits, target)[0])


@contextlib.contextmanager
def _replace_last_position(model: LoadedModel, layer: int, head: int, mean: Tensor) -> Iterator[None]:
    """Hook o_proj(layer): head `head`'s input slice at the last position becomes `mean` (d_head,)."""

    def hook(_module, args):
        z = args[0].clone()  # (batch, pos, head·d_head)
        z[:, -1, model.head_slice(head)] = mean.to(z.dtype)
        return (z, *args[1:])

    with hooks([model.o_proj(layer).register_forward_pre_hook(hook)]):
        yield


@torch.no_grad()
def score_function_vectors_reference(model: LoadedModel, prompt_set: PromptSet, means: Tensor) -> FunctionVectorScores:
    """FV scores by the reference's loop: per corrupted prompt, one unpatched and L·H patched batch-1 forwards.

    Slow (docs/performance.md, "Reference FV cost"); the oracle the fast path is tested against.
    """
    prompt_set.check_fits(model.n_ctx)
    _check_means(model, prompt_set, means)
    means_on_device = means.to(model.device)
    effects = []
    for t, task in enumerate(prompt_set.tasks):
        task_effects = torch.empty(len(task.corrupted), model.n_layers, model.n_heads)
        for trial, prompt in enumerate(task.corrupted):
            p0 = _last_position_probability(model, prompt)
            for layer in range(model.n_layers):
                for head in range(model.n_heads):
                    with _replace_last_position(model, layer, head, means_on_device[t, layer, head]):
                        task_effects[trial, layer, head] = _last_position_probability(model, prompt) - p0
        effects.append(task_effects)
    return _aggregate(prompt_set, effects, means, model.dtype)


# --- the fast path --------------------------------------------------------------------------------


@contextlib.contextmanager
def _patch_new_rows(model: LoadedModel, layer: int, means: Tensor, per_prompt: int) -> Iterator[None]:
    """Hook o_proj(layer) for rows laid out (prompt, per_prompt) whose last n_heads rows patch head 0…H−1.

    `means` is (prompt, head, d_head): row per_prompt−H+h of each prompt gets head h's slice replaced.
    """
    n_heads, d_head = model.n_heads, model.d_head
    heads = torch.arange(n_heads, device=model.device)

    def hook(_module, args):
        z = args[0].clone().view(-1, per_prompt, n_heads, d_head)  # (prompt, row, head, d_head)
        z[:, per_prompt - n_heads + heads, heads] = means.to(z.dtype)
        return (z.view(args[0].shape), *args[1:])

    with hooks([model.o_proj(layer).register_forward_pre_hook(hook)]):
        yield


def _patched_probabilities(
    model: LoadedModel, run: _UnpatchedPass, means: Tensor, targets: Tensor, unembed_rows: int
) -> Tensor:
    """p_{l,h} for every prompt of the batch and every head, (prompt, layer·head), rows ordered (layer, head).

    A row patching (l, h) joins at block l with the unpatched residual entering block l (nothing before
    layer l's o_proj changes at the last position) and is carried through blocks l…L−1; block l gets its
    head-h slice replaced by the hook. `means` is (prompt, layer, head, d_head).
    """
    n_prompts, n_layers, n_heads = run.residual.shape[0], model.n_layers, model.n_heads
    hidden = run.residual.new_empty(n_prompts, 0, model.d_model)  # (prompt, row, d_model)
    with model.attention_implementation(SHARED_PREFIX_ATTENTION):
        for layer in range(n_layers):
            joining = run.residual[:, layer, None, :].expand(n_prompts, n_heads, model.d_model)
            hidden = torch.cat([hidden, joining], dim=1)  # (prompt, (layer+1)·head, d_model)
            per_prompt = hidden.shape[1]
            flat = hidden.reshape(n_prompts * per_prompt, 1, model.d_model)  # (rows, 1, d_model)
            position_ids = run.last[:, None].expand(n_prompts, per_prompt).reshape(-1, 1)  # (rows, 1)
            rotary = model.position_embeddings(flat, position_ids)
            with _patch_new_rows(model, layer, means[:, layer], per_prompt):
                flat = model.run_block(layer, flat, position_ids, rotary, shared_prefix=run.prefix[layer])
            hidden = flat.view(n_prompts, per_prompt, model.d_model)
    flat = hidden.reshape(-1, model.d_model)  # (prompt·layer·head, d_model)
    row_targets = targets.repeat_interleave(n_layers * n_heads)
    probabilities = torch.cat([
        _target_probability(model.logits_from_residual(flat[i : i + unembed_rows]), row_targets[i : i + unembed_rows])
        for i in range(0, flat.shape[0], unembed_rows)
    ])
    return probabilities.view(n_prompts, n_layers * n_heads)


@torch.no_grad()
def score_function_vectors(
    model: LoadedModel, prompt_set: PromptSet, means: Tensor, config: FunctionVectorConfig = FunctionVectorConfig()
) -> FunctionVectorScores:
    """FV scores (same numbers as `score_function_vectors_reference`), batched with prefix reuse."""
    prompt_set.check_fits(model.n_ctx)
    _check_means(model, prompt_set, means)
    register_shared_prefix_attention()
    means_on_device = means.to(model.device)
    effects = [torch.empty(len(task.corrupted), model.n_layers, model.n_heads) for task in prompt_set.tasks]
    for batch in length_sorted_batches([t.corrupted for t in prompt_set.tasks], config.batch_size):
        prompts = [p for _, _, p in batch]
        task_index = torch.tensor([t for t, _, _ in batch], device=model.device)
        targets = torch.tensor([p.target_id for p in prompts], device=model.device)
        run = _run_unpatched(model, prompts, keep_prefix=True)
        p0 = _target_probability(model.logits_from_residual(run.final), targets)  # (prompt,)
        patched = _patched_probabilities(model, run, means_on_device[task_index], targets, config.unembed_rows)
        ie = (patched - p0[:, None]).view(len(batch), model.n_layers, model.n_heads).cpu()
        for (t, i, _), row in zip(batch, ie):
            effects[t][i] = row
    return _aggregate(prompt_set, effects, means, model.dtype)


def score_function_vector_heads(
    model: LoadedModel, prompt_set: PromptSet, config: FunctionVectorConfig = FunctionVectorConfig()
) -> FunctionVectorScores:
    """Mean activations and fast FV scores for one checkpoint; non-finite results are rescored in fp32.

    If fp32 scores are still non-finite they are returned as they are (NaN/inf); `rows.py` stores such
    values as null with flag 'non_finite', never as a number. `scores.dtype` says which precision was used.
    """
    means = mean_head_activations(model, prompt_set, config)
    scores = score_function_vectors(model, prompt_set, means, config)
    if scores.is_finite() or model.dtype == torch.float32:
        return scores
    logger.warning("FV scores are non-finite in %s; rescoring this checkpoint in float32", model.dtype)
    with model.temporary_dtype(torch.float32):
        means = mean_head_activations(model, prompt_set, config)
        return score_function_vectors(model, prompt_set, means, config)
