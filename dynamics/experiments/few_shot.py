"""Few-shot ICL accuracy of a checkpoint: prompts, greedy generation, SQuAD-style F1 and first-token top-1.

Definitions (docs/methods.md, "Few-shot accuracy"): per evaluation task, query i is the i-th row of the
valid pool (in order), with `n_shots` demonstrations drawn without replacement from the train pool; the
prompt is the clean reference template with BOS. The model generates up to `max_new_tokens` tokens
greedily; the answer is the first match of `[\\w. ]+` in the decoded text, compared with the stripped target by
token-level F1 after SQuAD normalisation. `top1` asks whether the argmax at the prompt's last position
is the target's first token. Model-level numbers are the mean over tasks of per-task means.

Generation is batched: right-padded prefill with an attention mask, each row read at its own last real
token, then one token per step through the KV cache with explicit position ids (left padding without
matching positions would shift rotary and learned positions). Generation stops at the stop token
(BOS/EOS), as `model.generate` does; the reference decodes "the last 5 ids of the output", which after
an early stop would include prompt tokens — we decode only the new tokens up to the stop token.

Interventions (head ablations, added function vectors) hook into every forward as an `Intervention`:
a callable that gets, per row, the index of the last position being processed and returns a context
manager holding the hooks. In the prefill that is the row's last prompt token; in each later step the
single new token (docs/methods.md, "Mean and zero ablation": the last position of whatever the model is
processing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from dynamics.adapters import LoadedModel
from dynamics.errors import InputError
from dynamics.tasks.base import IclPrompt, IclTask
from dynamics.tasks.prompts import (
    EncodedPrompt,
    PromptSet,
    encode_prompt_set,
    length_sorted_batches,
    padded_batch,
    task_rng,
)

Intervention = Callable[[Tensor], contextlib.AbstractContextManager]


@dataclass(frozen=True)
class IclEvalConfig:
    n_shots: int = 10
    n_queries: int = 100  # per task: the first n_queries rows of the valid pool
    seed: int = 42  # demonstration sampling
    max_new_tokens: int = 5
    batch_size: int = 32  # prompts per forward; results do not depend on it

    def __post_init__(self) -> None:
        problems = [f"{name} must be at least 1 (got {value})" for name, value in
                    (("n_queries", self.n_queries), ("max_new_tokens", self.max_new_tokens),
                     ("batch_size", self.batch_size)) if value < 1]
        if self.n_shots < 0:
            problems.append(f"n_shots must be at least 0 (got {self.n_shots})")
        if problems:
            raise InputError(f"IclEvalConfig: {'; '.join(problems)}")

    def settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "batch_size"}


# --- prompts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IclEvalPrompts:
    """Tokenized evaluation prompts, built once per tokenizer and reused for every checkpoint.

    `few_shot.tasks[t].clean[i]` is query i of task t with clean demonstrations; `.corrupted[i]` has the
    same demonstrations with their labels permuted (FV execution's shuffled condition); `zero_shot[t][i]`
    is the bare query.
    """

    few_shot: PromptSet
    zero_shot: tuple[tuple[EncodedPrompt, ...], ...]
    decode: Callable[[Sequence[int]], str]  # token ids → text
    stop_id: int  # generation ends at this id (the tokenizer's EOS, which is BOS for Pythia)

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.few_shot.task_names

    def settings(self) -> dict:
        zero = [[list(p.input_ids) for p in task] for task in self.zero_shot]
        return {**self.few_shot.settings(), "zero_shot_sha256": _sha256(zero)}

    def fitting(self, n_ctx: int, max_new_tokens: int) -> IclEvalPrompts:
        """Only the tasks whose prompts and generated tokens fit a context of `n_ctx` (small toy models)."""
        limit = n_ctx - max_new_tokens + 1
        keep = [i for i, t in enumerate(self.few_shot.tasks)
                if max(len(p.input_ids) for kind in ("clean", "corrupted") for p in t.prompts(kind)) <= limit]
        if not keep:
            raise InputError(
                f"no evaluation task has prompts of at most {limit} tokens (context {n_ctx}, {max_new_tokens} new "
                "tokens); use fewer shots"
            )
        few_shot = PromptSet(tasks=tuple(self.few_shot.tasks[i] for i in keep), seed=self.few_shot.seed)
        return IclEvalPrompts(few_shot, tuple(self.zero_shot[i] for i in keep), self.decode, self.stop_id)


def _sha256(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def sample_eval_prompts(task: IclTask, config: IclEvalConfig) -> tuple[list[IclPrompt], list[IclPrompt]]:
    """(clean, label-shuffled) prompts for the first `n_queries` valid rows, in order; same demonstrations."""
    if len(task.train) < config.n_shots or not task.valid:
        raise InputError(
            f"task {task.name!r} has {len(task.train)} train and {len(task.valid)} valid rows; {config.n_shots}-shot "
            "evaluation needs that many train rows and a valid row: lower n_shots or leave the task out"
        )
    rng: np.random.Generator = task_rng(config.seed, task.name)
    clean, shuffled = [], []
    for query, target in task.valid[: config.n_queries]:
        shots = [task.train[i] for i in rng.choice(len(task.train), config.n_shots, replace=False)]
        labels = [shots[i][1] for i in rng.permutation(config.n_shots)]
        clean.append(IclPrompt(task.name, tuple(shots), query, target, task.template))
        shuffled.append(IclPrompt(task.name, tuple((x, y) for (x, _), y in zip(shots, labels)), query, target,
                                  task.template))
    return clean, shuffled


def build_eval_prompts(tasks: Mapping[str, IclTask], tokenizer, config: IclEvalConfig = IclEvalConfig()) -> IclEvalPrompts:
    """Draw and tokenize every task's few-shot, shuffled and zero-shot prompts (BOS text included)."""
    drawn = {name: sample_eval_prompts(task, config) for name, task in tasks.items()}
    few_shot = encode_prompt_set(drawn, tokenizer, seed=config.seed)
    # A zero-shot prompt is the few-shot one without demonstrations; encode_prompt_set wants two kinds.
    bare = {name: [IclPrompt(p.task, (), p.query, p.target, p.template) for p in clean]
            for name, (clean, _) in drawn.items()}
    zero_shot = encode_prompt_set({name: (prompts, prompts[:1]) for name, prompts in bare.items()}, tokenizer)
    stop_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    return IclEvalPrompts(few_shot, tuple(t.clean for t in zero_shot.tasks), tokenizer.decode, stop_id)


# --- answer parsing (Todd et al.'s eval_utils, SQuAD v1.1 normalisation) ------------------------------


def parse_generation(text: str) -> str:
    """The first run of word characters, dots and spaces in `text` ('' if none)."""
    match = re.search(r"[\w. ]+", text)
    return match.group(0) if match else ""


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, reference: str) -> float:
    """Token-level F1 of the normalised bags of words; 0 when they share no token (also when both are empty)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


# --- generation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    first_argmax: Tensor  # (batch,) argmax of the next-token logits at each prompt's last token
    new_ids: list[list[int]]  # per row: generated ids, cut before the stop id
    finite: Tensor  # (batch,) bool: every logit the row was decoded from was finite (an argmax of NaN means nothing)


def _step(model: LoadedModel, intervention: Intervention | None, positions: Tensor, **inputs):
    context = intervention(positions) if intervention is not None else contextlib.nullcontext()
    with context:
        return model.model.base_model(**inputs)


@torch.no_grad()
def greedy_generate(
    model: LoadedModel, prompts: Sequence[EncodedPrompt], max_new_tokens: int, stop_id: int,
    intervention: Intervention | None = None,
) -> Generation:
    """Greedy continuation of a batch of prompts, with `intervention` applied in every forward."""
    ids, lengths = padded_batch(prompts, model.device)  # (batch, pos), (batch,)
    batch, n_pos = ids.shape
    rows = torch.arange(batch, device=model.device)
    mask = (torch.arange(n_pos, device=model.device)[None, :] < lengths[:, None]).long()  # (batch, pos)
    out = _step(model, intervention, lengths - 1, input_ids=ids, attention_mask=mask, use_cache=max_new_tokens > 1)
    head = model.model.get_output_embeddings()
    logits = head(out.last_hidden_state[rows, lengths - 1])  # (batch, vocab)
    token, finite = logits.argmax(-1), torch.isfinite(logits).all(-1)  # (batch,), (batch,)
    first, generated = token, [token]
    done = token == stop_id
    for step in range(1, max_new_tokens):
        if bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)  # (batch, pos + step)
        position_ids = (lengths + step - 1)[:, None]  # (batch, 1): right after the row's last token
        out = _step(model, intervention, torch.zeros_like(lengths), input_ids=token[:, None], attention_mask=mask,
                    position_ids=position_ids, cache=out.cache, use_cache=True)
        logits = head(out.last_hidden_state[:, -1])  # (batch, vocab)
        token = logits.argmax(-1)  # (batch,)
        finite &= done | torch.isfinite(logits).all(-1)
        generated.append(token)
        done |= token == stop_id
    new = torch.stack(generated, dim=1).tolist()  # (batch, steps)
    return Generation(first, [row[: row.index(stop_id)] if stop_id in row else row for row in new], finite)


# --- evaluation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IclAccuracy:
    """Per-prompt scores of one condition: {task: (prompt,) tensors} for 'f1' and 'top1'."""

    f1: dict[str, Tensor]
    top1: dict[str, Tensor]

    def task_means(self) -> dict[str, dict[str, float]]:
        return {task: {"f1": float(self.f1[task].mean()), "top1": float(self.top1[task].mean())} for task in self.f1}

    def model_means(self) -> dict[str, float]:
        """Mean over tasks of the per-task means."""
        means = self.task_means().values()
        return {metric: float(np.mean([m[metric] for m in means])) for metric in ("f1", "top1")}


def evaluate_few_shot(
    model: LoadedModel, prompts: IclEvalPrompts, config: IclEvalConfig = IclEvalConfig(),
    intervention: Intervention | None = None,
) -> IclAccuracy:
    """F1 of the greedy answer and first-token top-1 for every clean few-shot prompt."""
    tasks = [t.clean for t in prompts.few_shot.tasks]
    f1 = [torch.zeros(len(t)) for t in tasks]
    top1 = [torch.zeros(len(t)) for t in tasks]
    for batch in length_sorted_batches(tasks, config.batch_size):
        encoded = [p for _, _, p in batch]
        generation = greedy_generate(model, encoded, config.max_new_tokens, prompts.stop_id, intervention)
        for (t, i, p), first, new, finite in zip(batch, generation.first_argmax.tolist(), generation.new_ids,
                                                 generation.finite.tolist()):
            top1[t][i] = float(first == p.target_id) if finite else math.nan
            f1[t][i] = f1_score(parse_generation(prompts.decode(new)), p.prompt.target.strip()) if finite else math.nan
    names = prompts.task_names
    return IclAccuracy(dict(zip(names, f1)), dict(zip(names, top1)))


@torch.no_grad()
def first_token_correct(
    model: LoadedModel, prompts: Sequence[Sequence[EncodedPrompt]], batch_size: int,
    intervention: Intervention | None = None,
) -> list[Tensor]:
    """Per task, (prompt,) 1.0 where the argmax at the last prompt token is the target's first token, else
    0.0; NaN where the logits were not finite."""
    correct = [torch.zeros(len(t)) for t in prompts]
    for batch in length_sorted_batches(prompts, batch_size):
        generation = greedy_generate(model, [p for _, _, p in batch], 1, stop_id=-1, intervention=intervention)
        for (t, i, p), first, finite in zip(batch, generation.first_argmax.tolist(), generation.finite.tolist()):
            correct[t][i] = float(first == p.target_id) if finite else math.nan
    return correct
