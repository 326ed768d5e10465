"""A synthetic task family for growing function-vector heads: random bijections over shared word sets.

Every task maps the same `n_words` single-token input words (`a00`, `a01`, …) onto the same `n_words`
output words (`b00`, …) by its own random permutation, so the tasks differ only in the pairing. With
label-shuffled demonstrations a prompt then carries (almost) no evidence of its task, and the mean
head activations have something to restore: the FV indirect effect is large only when some head
carries the task (docs/methods.md, "Synthetic tasks"). Every task splits the inputs the same way: the
first `n_demo_inputs` of a seeded order give the demonstrations, the others the queries, so a query is
never among its prompt's demonstrations and copying cannot answer it.

Prompts use the compact template `x₁ y₁ x₂ y₂ … x_q` (the target ` y_q` is the next token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynamics.errors import InputError
from dynamics.tasks.base import IclTask, Template

COMPACT_TEMPLATE = Template(input_prefix="", output_prefix="", input_separator="", output_separator="")


@dataclass(frozen=True)
class BijectionTasks:
    """`n_tasks` random bijections between `n_words` input words and `n_words` output words."""

    n_tasks: int = 4
    n_words: int = 32
    n_demo_inputs: int = 16  # inputs whose pairs serve as demonstrations; the rest are queries
    seed: int = 1234  # fixes the bijections and the split

    def __post_init__(self) -> None:
        problems = []
        if self.n_tasks < 1:
            problems.append(f"n_tasks must be at least 1 (got {self.n_tasks})")
        if self.n_words < 2:
            problems.append(f"n_words must be at least 2 (got {self.n_words})")
        if not 1 <= self.n_demo_inputs < self.n_words:
            problems.append(f"n_demo_inputs must leave at least one query input: 1 ≤ {self.n_demo_inputs} < {self.n_words}")
        if problems:
            raise InputError("BijectionTasks: " + "; ".join(problems))

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(f"a{i:02d}" for i in range(self.n_words))

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f"b{i:02d}" for i in range(self.n_words))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"bijection_{t}" for t in range(self.n_tasks))

    def maps(self) -> np.ndarray:
        """(task, input index) → output index."""
        rng = np.random.default_rng([self.seed, 0])
        return np.stack([rng.permutation(self.n_words) for _ in range(self.n_tasks)])

    def demo_inputs(self) -> tuple[int, ...]:
        """Input indices of the demonstration pool (the same for every task); the others are queries."""
        order = np.random.default_rng([self.seed, 1]).permutation(self.n_words)
        return tuple(sorted(int(i) for i in order[: self.n_demo_inputs]))

    def tasks(self) -> dict[str, IclTask]:
        """The family as `IclTask`s: train pool = demonstration inputs, valid pool = query inputs."""
        maps, demos = self.maps(), set(self.demo_inputs())
        queries = [i for i in range(self.n_words) if i not in demos]
        tasks = {}
        for name, mapping in zip(self.names, maps):
            pairs = [(self.inputs[i], self.outputs[int(mapping[i])]) for i in range(self.n_words)]
            tasks[name] = IclTask(name=name, train=tuple(pairs[i] for i in sorted(demos)),
                                  valid=tuple(pairs[i] for i in queries), source="synthetic", template=COMPACT_TEMPLATE)
        return tasks
