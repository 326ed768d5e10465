"""ICL tasks and few-shot prompts: the task and prompt types, the reference's row split, prompt sampling.

A task is a name plus deterministic train/valid pools of (input, output) pairs. Prompts follow a
`Template`; the default is the reference's (docs/methods.md, "Prompts"): BOS text, then for each
demonstration `Q: x\\nA: y\\n\\n`, then `Q: x_q\\nA:`; the target is ` y_q` and the scored token is the
first token of ` y_q` tokenized alone.

Tasks come from `dynamics.tasks.builtin` (generated, always available offline) and
`dynamics.tasks.todd` (Todd et al.'s JSON files in a folder the caller names). Both split rows with
`split_rows`, the reference's two-stage split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dynamics.errors import InputError


@dataclass(frozen=True)
class Template:
    """How a prompt is written; the defaults are the reference's (Yin & Steinhardt's `find_fv_heads.py`).

    A template belongs to a task set (each `IclTask` carries its own): the toy suite's synthetic tasks use
    a compact one with no prefixes, `x₁ y₁ x₂ y₂ … x_q`.
    """

    input_prefix: str = "Q:"
    output_prefix: str = "A:"
    input_separator: str = "\n"
    output_separator: str = "\n\n"
    prepend_bos: bool = True


@dataclass(frozen=True)
class IclTask:
    """An ICL task: train pool for demonstrations, valid pool for queries."""

    name: str
    train: tuple[tuple[str, str], ...]
    valid: tuple[tuple[str, str], ...]
    source: str = "builtin"  # 'builtin', 'synthetic', or the file it was read from
    template: Template = Template()


@dataclass(frozen=True)
class IclPrompt:
    """One few-shot prompt: demonstrations, a query, and the query's target (without leading space)."""

    task: str
    demonstrations: tuple[tuple[str, str], ...]
    query: str
    target: str
    template: Template = Template()

    def text(self, bos_text: str) -> str:
        """The prompt string, ending in the output prefix (the scored position is its last token)."""
        template = self.template
        parts = [bos_text if template.prepend_bos else ""]
        for x, y in self.demonstrations:
            parts += [template.input_prefix, f" {x}", template.input_separator]
            parts += [template.output_prefix, f" {y}", template.output_separator]
        parts += [template.input_prefix, f" {self.query}", template.input_separator, template.output_prefix]
        return "".join(parts)


Row = tuple[str, str]

def split_rows(rows: Sequence[Row], seed: int = 0, test_size: float = 0.3) -> tuple[tuple[Row, ...], tuple[Row, ...]]:
    """(train, valid) as the reference's `split_icl_dataset` builds them (docs/methods.md, "Two-stage split").

    Two sklearn-style `train_test_split` calls, each a `RandomState(seed).permutation` whose first
    ⌈test_size·n⌉ indices are the held-out piece: rows → (train, rest), rest → (test, valid); valid is
    the smaller piece and test is dropped. The arithmetic (including sklearn's float `ceil`) and the
    permutation follow sklearn's ShuffleSplit; we do not import sklearn, so bit-identity with it is
    expected but not guaranteed across numpy versions.
    """

    def split(items: Sequence[Row]) -> tuple[list[Row], list[Row]]:
        n_held = math.ceil(test_size * len(items))
        order = np.random.RandomState(seed).permutation(len(items))
        return [items[i] for i in order[n_held:]], [items[i] for i in order[:n_held]]

    train, rest = split(rows)
    _test, valid = split(rest)
    return tuple(train), tuple(valid)


def sample_prompts(
    task: IclTask,
    n: int,
    n_shots: int,
    rng: np.random.Generator | int,
    shuffle_labels: bool = False,
) -> list[IclPrompt]:
    """`n` prompts: `n_shots` demonstrations drawn without replacement from train, a query from valid.

    With `shuffle_labels` the demonstration outputs are permuted among the same inputs (the
    reference's corrupted prompts, docs/methods.md, "Prompt sampling"); the query's target is never
    shuffled. An int `rng` seeds `numpy.random.default_rng`, so the same seed gives the same prompts.
    """
    if n_shots < 0 or n < 1:
        raise InputError(f"need n ≥ 1 prompts and n_shots ≥ 0 (got n={n}, n_shots={n_shots})")
    if len(task.train) < n_shots or not task.valid:
        raise InputError(
            f"task {task.name!r} has {len(task.train)} train and {len(task.valid)} valid rows; "
            f"{n_shots}-shot prompts need {n_shots} train rows and 1 valid row: lower n_shots or add rows"
        )
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    prompts = []
    for _ in range(n):
        shots = [task.train[i] for i in rng.choice(len(task.train), n_shots, replace=False)]
        query, target = task.valid[int(rng.integers(len(task.valid)))]
        outputs = [y for _, y in shots]
        if shuffle_labels:
            outputs = [outputs[i] for i in rng.permutation(n_shots)]
        demonstrations = tuple((x, y) for (x, _), y in zip(shots, outputs))
        prompts.append(IclPrompt(task.name, demonstrations, query, target, task.template))
    return prompts
