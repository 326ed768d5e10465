"""The organism's training data: repeated random spans (for induction heads) and packed ICL episodes of
synthetic bijection tasks (for FV heads), mixed by a curriculum.

- Span rows: BOS, then blocks; a block is a random span of `min_span..max_span` words of the whole
  vocabulary, written `min_reps..max_reps` times in a row (the last block is cut at the row's end).
  Copying an earlier span is only possible in context: the induction signal. Varying span lengths vary
  the offset an induction head must find.
- Episode rows: episodes packed back to back, each `BOS x₁ y₁ … x_N y_N x_q y_q` of one task drawn
  uniformly, N uniform in `min_shots..max_shots`, distinct inputs, the query input not among the
  demonstrations, so only inferring the task from the pairs predicts y_q. With `label_noise`, some
  demonstrations carry a random label, so no single pair decides the task: the model must pool the
  evidence of all of them. The loss is on every token.
- Curriculum: no episode rows before `switch_step` (induction heads form first on span rows alone),
  then `icl_share` of the rows are episodes (docs/methods.md, "The toy suites").
One seeded numpy generator draws everything, so a model's batches depend on its seed only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from dynamics.errors import InputError
from dynamics.scorers.induction import ordinary_token_ids
from dynamics.tasks.synthetic import BijectionTasks
from dynamics.toy.tokenizer import word_tokenizer
from dynamics.toy.train import PreparedData


@dataclass(frozen=True)
class EpisodeData:
    """What the organism trains on (see the module docstring), and the words its tokenizer knows."""

    tasks: BijectionTasks = field(default_factory=BijectionTasks)
    n_fillers: int = 64  # words only the span rows use ("c00", …)
    context_length: int = 64
    batch_size: int = 32
    min_span: int = 4
    max_span: int = 20
    min_reps: int = 2
    max_reps: int = 3
    min_shots: int = 4
    max_shots: int = 10
    label_noise: float = 0.0  # chance that a demonstration's label is a random output word (never the query's)
    switch_step: int = 1000  # episode rows start here
    icl_share: float = 0.8  # share of episode rows from switch_step on
    n_heldout_rows: int = 256  # span rows for the ICL token-loss score, from their own seed stream

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.min_span <= self.max_span or not 1 <= self.min_reps <= self.max_reps:
            problems.append("need 1 ≤ min_span ≤ max_span and 1 ≤ min_reps ≤ max_reps")
        if not 1 <= self.min_shots <= self.max_shots < self.tasks.n_words:
            problems.append(f"need 1 ≤ min_shots ≤ max_shots < n_words ({self.tasks.n_words}): the query is a new input")
        if 2 * self.max_shots + 3 > self.context_length:
            problems.append(f"an episode of {self.max_shots} shots does not fit {self.context_length} tokens")
        for name in ("icl_share", "label_noise"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1] (got {getattr(self, name)})")
        if problems:
            raise InputError("EpisodeData: " + "; ".join(problems))

    @property
    def fillers(self) -> tuple[str, ...]:
        return tuple(f"c{i:02d}" for i in range(self.n_fillers))

    @property
    def words(self) -> tuple[str, ...]:
        return (*self.tasks.inputs, *self.tasks.outputs, *self.fillers)

    def tokenizer(self):
        return word_tokenizer(self.words)

    def icl_share_at(self, step: int) -> float:
        return self.icl_share if step >= self.switch_step else 0.0

    def prepare(self, seed: int) -> tuple[PreTrainedTokenizerFast, PreparedData]:
        """The word-level tokenizer and the held-out span rows (training rows are drawn per step)."""
        tokenizer = self.tokenizer()
        heldout = heldout_span_rows(self, seed)
        first_batch = EpisodeSampler(self, seed).batch(self.switch_step)
        digest = hashlib.sha256(heldout.numpy().tobytes() + first_batch.numpy().tobytes()).hexdigest()
        return tokenizer, PreparedData(len(tokenizer), ordinary_token_ids(tokenizer), heldout, None, digest)

    def batches(self, prepared: PreparedData, seed: int) -> Callable[[int], Tensor]:
        """step → that step's training batch (`prepared` is not needed: the words fix the ids)."""
        return EpisodeSampler(self, seed).batch


class EpisodeSampler:
    """Draws the (batch_size, context_length) ids of each training step."""

    def __init__(self, data: EpisodeData, seed: int) -> None:
        self.data = data
        self.rng = np.random.default_rng([seed, 7])
        tokenizer = data.tokenizer()
        ids = tokenizer.convert_tokens_to_ids
        self.bos_id = tokenizer.bos_token_id
        first_word = ids(data.words[0])
        self.word_ids = np.arange(first_word, first_word + len(data.words))  # every ordinary word, after the specials
        self.input_ids = np.array([ids(w) for w in data.tasks.inputs])
        self.output_ids = np.array([ids(w) for w in data.tasks.outputs])
        self.maps = data.tasks.maps()  # (task, input) → output index

    def span_row(self) -> np.ndarray:
        d, rng = self.data, self.rng
        row = [self.bos_id]
        while len(row) < d.context_length:
            span = rng.choice(self.word_ids, size=int(rng.integers(d.min_span, d.max_span + 1))).tolist()
            row += span * int(rng.integers(d.min_reps, d.max_reps + 1))
        return np.array(row[: d.context_length])

    def episode(self) -> list[int]:
        d, rng = self.data, self.rng
        n = int(rng.integers(d.min_shots, d.max_shots + 1))
        task = int(rng.integers(len(self.maps)))
        inputs = rng.choice(len(self.input_ids), size=n + 1, replace=False)  # the last is the query
        labels = self.maps[task, inputs]
        if d.label_noise > 0:
            noisy = rng.random(n + 1) < d.label_noise
            noisy[-1] = False  # the query's answer is always the task's
            labels = np.where(noisy, rng.integers(len(self.output_ids), size=n + 1), labels)
        tokens = [self.bos_id]
        for i, j in zip(inputs, labels):
            tokens += [int(self.input_ids[i]), int(self.output_ids[j])]
        return tokens

    def episode_row(self) -> np.ndarray:
        row: list[int] = []
        while len(row) < self.data.context_length:
            row += self.episode()
        return np.array(row[: self.data.context_length])

    def batch(self, step: int) -> Tensor:
        d = self.data
        n_episodes = int(round(d.icl_share_at(step) * d.batch_size))
        rows = [self.episode_row() for _ in range(n_episodes)] + [self.span_row() for _ in range(d.batch_size - n_episodes)]
        return torch.from_numpy(np.stack(rows)).long()


def heldout_span_rows(data: EpisodeData, seed: int) -> Tensor:
    """(rows, context_length) span rows from a stream training never draws: the ICL token-loss score's text."""
    sampler = EpisodeSampler(data, seed=10_000 + seed)
    return torch.from_numpy(np.stack([sampler.span_row() for _ in range(data.n_heldout_rows)])).long()
