"""Tokenized FV prompt sets, built once per task list and reused for every checkpoint.

The FV score (docs/methods.md, "Function-vector score") needs, per task, clean few-shot prompts (for the
task-mean head activations) and label-shuffled prompts (for the indirect effect). Sampling never depends
on the model (docs/methods.md, "Prompt sampling"), so a `PromptSet` is drawn and tokenized once and
handed to every checkpoint of every size that shares the tokenizer. It can be written out as records (`to_records`) and read back
(`from_records`), and carries a content hash so every stored score names the exact prompts it used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from dynamics.errors import InputError
from dynamics.tasks.base import IclPrompt, IclTask, Template, sample_prompts

PROMPT_KINDS = ("clean", "corrupted")


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt, its token ids (BOS text included) and the id of its target's first token."""

    prompt: IclPrompt
    input_ids: tuple[int, ...]
    target_id: int


@dataclass(frozen=True)
class TaskPrompts:
    """One task's clean prompts (mean activations) and corrupted prompts (indirect effect)."""

    task: str
    clean: tuple[EncodedPrompt, ...]
    corrupted: tuple[EncodedPrompt, ...]

    def prompts(self, kind: str) -> tuple[EncodedPrompt, ...]:
        return self.clean if kind == "clean" else self.corrupted


@dataclass(frozen=True)
class PromptSet:
    """Tokenized FV prompts for an ordered list of tasks.

    `seed` is the sampling seed, or None when the prompts were passed in explicitly.
    """

    tasks: tuple[TaskPrompts, ...]
    seed: int | None

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.task for t in self.tasks)

    @property
    def n_shots(self) -> int | None:
        """Demonstrations per prompt, or None if the prompts differ."""
        shots = {len(p.prompt.demonstrations) for t in self.tasks for kind in PROMPT_KINDS for p in t.prompts(kind)}
        return shots.pop() if len(shots) == 1 else None

    def fitting(self, n_ctx: int) -> PromptSet:
        """The set without the tasks that have a prompt longer than `n_ctx` tokens."""
        keep = tuple(t for t in self.tasks if max(len(p.input_ids) for k in PROMPT_KINDS for p in t.prompts(k)) <= n_ctx)
        return PromptSet(tasks=keep, seed=self.seed)

    def check_fits(self, n_ctx: int) -> None:
        """Raise if any prompt is longer than a context of `n_ctx` tokens."""
        for task in self.tasks:
            longest = max(len(p.input_ids) for kind in PROMPT_KINDS for p in task.prompts(kind))
            if longest > n_ctx:
                raise InputError(
                    f"task {task.task!r} has a prompt of {longest} tokens but the model's context is {n_ctx} "
                    "tokens; use fewer shots or leave the task out"
                )

    def to_records(self) -> list[dict]:
        """One JSON-ready dict per prompt, in task order, clean before corrupted."""
        return [
            {
                "task": task.task,
                "task_index": task_index,
                "kind": kind,
                "index": index,
                "demonstrations": [list(pair) for pair in encoded.prompt.demonstrations],
                "query": encoded.prompt.query,
                "target": encoded.prompt.target,
                "template": dataclasses.asdict(encoded.prompt.template),
                "input_ids": list(encoded.input_ids),
                "target_id": encoded.target_id,
            }
            for task_index, task in enumerate(self.tasks)
            for kind in PROMPT_KINDS
            for index, encoded in enumerate(task.prompts(kind))
        ]

    @classmethod
    def from_records(cls, records: Sequence[Mapping], seed: int | None = None) -> PromptSet:
        """Rebuild a set from `to_records()` output, in any row order (the ids are in the records: no tokenizer)."""
        grouped: dict[str, dict[str, list[tuple[int, EncodedPrompt]]]] = {}
        task_order: dict[str, int] = {}
        for record in records:
            if record["kind"] not in PROMPT_KINDS:
                raise InputError(f"prompt record kind {record['kind']!r} is not one of {', '.join(PROMPT_KINDS)}")
            prompt = IclPrompt(
                task=record["task"],
                demonstrations=tuple((str(x), str(y)) for x, y in record["demonstrations"]),
                query=str(record["query"]),
                target=str(record["target"]),
                template=Template(**record.get("template", {})),
            )
            encoded = EncodedPrompt(prompt, tuple(int(i) for i in record["input_ids"]), int(record["target_id"]))
            task_order[record["task"]] = int(record["task_index"])
            kinds = grouped.setdefault(record["task"], {kind: [] for kind in PROMPT_KINDS})
            kinds[record["kind"]].append((int(record["index"]), encoded))
        tasks = []
        for name in sorted(grouped, key=task_order.__getitem__):
            kinds = grouped[name]
            ordered = {kind: tuple(p for _, p in sorted(kinds[kind], key=lambda item: item[0])) for kind in PROMPT_KINDS}
            tasks.append(_task_prompts(name, ordered["clean"], ordered["corrupted"]))
        return cls(tasks=tuple(tasks), seed=seed)

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the records: equal hashes mean the same prompts, ids and targets in the same order."""
        blob = json.dumps(self.to_records(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()

    def settings(self) -> dict:
        """What a stored score needs to name its prompts (provenance)."""
        return {
            "prompt_seed": self.seed,
            "n_shots": self.n_shots,
            "tasks": list(self.task_names),
            "n_clean": {t.task: len(t.clean) for t in self.tasks},
            "n_corrupted": {t.task: len(t.corrupted) for t in self.tasks},
            "prompts_sha256": self.content_hash,
        }


def _task_prompts(name: str, clean: Sequence[EncodedPrompt], corrupted: Sequence[EncodedPrompt]) -> TaskPrompts:
    if not clean or not corrupted:
        raise InputError(
            f"task {name!r} has {len(clean)} clean and {len(corrupted)} corrupted prompts; the FV score needs at "
            "least one of each"
        )
    return TaskPrompts(task=name, clean=tuple(clean), corrupted=tuple(corrupted))


def task_rng(seed: int, task: str) -> np.random.Generator:
    """The generator for one task's prompts: depends on the seed and the task name only.

    Unlike the reference's single global stream (docs/methods.md, "Prompt sampling"), adding or dropping
    a task does not change the prompts of the others.
    """
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def build_prompt_set(
    tasks: Mapping[str, IclTask],
    tokenizer,
    *,
    names: Sequence[str] | None = None,
    n_shots: int = 10,
    n_clean: int = 100,
    n_corrupted: int = 100,
    seed: int = 42,
    bos_text: str | None = None,
) -> PromptSet:
    """Draw and tokenize the clean and label-shuffled prompts of each named task (in each task's template).

    Args:
        tasks: available tasks by name (`builtin_tasks()`, `load_task_dir(...)`).
        tokenizer: a transformers tokenizer; its `bos_token` is the BOS text unless `bos_text` is given.
        names: tasks to use, in order; None uses all of `tasks`.
        n_shots, n_clean, n_corrupted, seed: prompt counts per task and the sampling seed.
    """
    names = list(tasks) if names is None else list(names)
    unknown = [name for name in names if name not in tasks]
    if unknown:
        raise InputError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(sorted(tasks))}")
    drawn = {}
    for name in names:
        rng = task_rng(seed, name)
        clean = sample_prompts(tasks[name], n_clean, n_shots, rng)
        corrupted = sample_prompts(tasks[name], n_corrupted, n_shots, rng, shuffle_labels=True)
        drawn[name] = (clean, corrupted)
    return encode_prompt_set(drawn, tokenizer, seed=seed, bos_text=bos_text)


def encode_prompt_set(
    prompts: Mapping[str, tuple[Sequence[IclPrompt], Sequence[IclPrompt]]],
    tokenizer,
    *,
    seed: int | None = None,
    bos_text: str | None = None,
) -> PromptSet:
    """Tokenize explicitly given prompts: {task: (clean prompts, corrupted prompts)}.

    Texts are `IclPrompt.text(bos_text)` (each prompt in its task's template) tokenized without the tokenizer's own special tokens
    (the BOS text is in the string, docs/methods.md, "Prompt template"); the target id is the first token of
    `" " + target` tokenized alone.
    """
    bos_text = tokenizer.bos_token if bos_text is None else bos_text
    if not bos_text and any(p.template.prepend_bos for pair in prompts.values() for kind in pair for p in kind):
        raise InputError("the tokenizer has no bos_token and no bos_text was given; pass bos_text")

    def encode(batch: Sequence[IclPrompt]) -> tuple[EncodedPrompt, ...]:
        texts = [p.text(bos_text) for p in batch]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        targets = tokenizer([f" {p.target}" for p in batch], add_special_tokens=False)["input_ids"]
        for prompt, target in zip(batch, targets):
            if not target:
                raise InputError(f"task {prompt.task!r}: target {prompt.target!r} tokenizes to nothing")
        return tuple(EncodedPrompt(p, tuple(i), t[0]) for p, i, t in zip(batch, ids, targets))

    tasks = tuple(_task_prompts(name, encode(clean), encode(corrupted)) for name, (clean, corrupted) in prompts.items())
    return PromptSet(tasks=tasks, seed=seed)


def length_sorted_batches(
    prompts: Sequence[Sequence[EncodedPrompt]], batch_size: int
) -> Iterator[list[tuple[int, int, EncodedPrompt]]]:
    """(task index, prompt index, prompt) of every task's prompts, in batches of similar length (little padding)."""
    items = sorted(((t, i, p) for t, task in enumerate(prompts) for i, p in enumerate(task)),
                   key=lambda item: len(item[2].input_ids))
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def padded_batch(prompts: Sequence[EncodedPrompt], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Right-padded ids (batch, pos) and lengths (batch,); pads are id 0 and masked by the caller."""
    lengths = torch.tensor([len(p.input_ids) for p in prompts])
    ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt.input_ids)] = torch.tensor(prompt.input_ids)
    return ids.to(device), lengths.to(device)
