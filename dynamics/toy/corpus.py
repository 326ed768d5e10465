"""The story data of the 'stories' toy preset: generated stories, few-shot ICL prompts, repeated spans.

Three sources, all generated from a seed so any machine rebuilds the same tokens:
- stories from a small grammar over `dynamics.tasks.wordlists`; each story invents a few names (several
  BPE tokens each) and keeps reusing them, so, as in real text, later tokens are predictable by
  copying from earlier ones (the in-context signal the token-loss score measures);
- few-shot prompts of the built-in ICL tasks in the reference template, answer appended;
- rows of uniformly random ordinary ids with one span copied to a later, variable offset. A fixed
  offset would reward a head that attends a fixed distance back instead of an induction head.
Held-out stories (another seed stream) are kept for evaluation and never trained on.
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
from dynamics.tasks import wordlists
from dynamics.tasks.base import IclTask, sample_prompts
from dynamics.tasks.builtin import builtin_tasks
from dynamics.toy.tokenizer import BOS_TEXT, train_tokenizer
from dynamics.toy.train import PreparedData


@dataclass(frozen=True)
class CorpusConfig:
    n_stories: int = 3000  # training stories
    n_prompts: int = 3000  # training few-shot prompts
    n_heldout_stories: int = 256
    min_sentences: int = 8
    max_sentences: int = 16
    max_shots: int = 8  # prompts have 1..max_shots demonstrations

    def __post_init__(self) -> None:
        problems = []
        if min(self.n_stories, self.n_prompts, self.n_heldout_stories) < 1:
            problems.append("n_stories, n_prompts and n_heldout_stories must be positive")
        if not 1 <= self.min_sentences <= self.max_sentences:
            problems.append(f"need 1 ≤ min_sentences ≤ max_sentences (got {self.min_sentences}, {self.max_sentences})")
        if self.max_shots < 1:
            problems.append(f"max_shots must be positive (got {self.max_shots})")
        if problems:
            raise InputError(f"CorpusConfig has {len(problems)} problem(s): " + "; ".join(problems))


_NOUNS = sorted(wordlists.NOUNS)
_SENTENCES = (
    "{a} saw a {adj} {noun} near the {noun2}.",
    "The {noun} of {a} was {adj}.",
    "{a} and {b} {past} the {plural} in {place}.",
    "Every {day}, {a} {past} {count} {plural}.",
    "{b} said that the {noun} in {place} was {adj}.",
    "In {place}, {a} met {b} by the {noun}.",
    "{a} gave {b} a {adj} {noun}.",
    "Later, {b} {past} a {noun} for {a}.",
)


def _invent_name(rng: np.random.Generator) -> str:
    syllables = rng.choice(wordlists.SYLLABLES, size=int(rng.integers(2, 4)))
    return "".join(syllables).capitalize()


def generate_story(rng: np.random.Generator, config: CorpusConfig) -> str:
    """One story: a few invented names and a place, reused across `min..max_sentences` sentences."""
    names = [_invent_name(rng) for _ in range(3)]
    place = _invent_name(rng)
    sentences = []
    for _ in range(int(rng.integers(config.min_sentences, config.max_sentences + 1))):
        a, b = rng.choice(names, size=2, replace=False)
        noun, noun2 = rng.choice(_NOUNS, size=2, replace=False)
        template = _SENTENCES[int(rng.integers(len(_SENTENCES)))]
        sentences.append(template.format(
            a=a, b=b, place=place, noun=noun, noun2=noun2, plural=wordlists.NOUNS[noun],
            adj=rng.choice(wordlists.ADJECTIVES), past=rng.choice(list(wordlists.VERBS.values())),
            day=rng.choice(wordlists.SEQUENCES[0]).capitalize(), count=rng.choice(wordlists.SEQUENCES[2][2:]),
        ))
    return " ".join(sentences)


def generate_prompts(rng: np.random.Generator, n: int, max_shots: int) -> list[str]:
    """`n` few-shot prompts of the built-in tasks (train rows only), each followed by its answer."""
    tasks = list(builtin_tasks().values())
    texts = []
    for _ in range(n):
        task = tasks[int(rng.integers(len(tasks)))]
        shots = int(rng.integers(1, max_shots + 1))
        # queries come from train too: valid rows stay unseen for later ICL evaluation
        pool = IclTask(name=task.name, train=task.train, valid=task.train)
        (prompt,) = sample_prompts(pool, 1, shots, rng)
        texts.append(prompt.text(BOS_TEXT) + " " + prompt.target)
    return texts


def generate_texts(seed: int, config: CorpusConfig) -> tuple[list[str], list[str]]:
    """(training documents, held-out stories); every document starts with the BOS text."""
    train_rng, heldout_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    stories = [BOS_TEXT + generate_story(train_rng, config) for _ in range(config.n_stories)]
    prompts = generate_prompts(train_rng, config.n_prompts, config.max_shots)
    heldout = [BOS_TEXT + generate_story(heldout_rng, config) for _ in range(config.n_heldout_stories)]
    documents = stories + prompts
    order = train_rng.permutation(len(documents))
    return [documents[i] for i in order], heldout


def pack_documents(tokenizer: PreTrainedTokenizerFast, documents: list[str], context_length: int) -> Tensor:
    """Documents tokenized, concatenated and cut into (rows, context_length) training rows."""
    ids = [i for doc in documents for i in tokenizer(doc).input_ids]
    n_rows = len(ids) // context_length
    return torch.tensor(ids[: n_rows * context_length], dtype=torch.long).view(n_rows, context_length)


def heldout_rows(tokenizer: PreTrainedTokenizerFast, stories: list[str], context_length: int) -> Tensor:
    """One row per held-out story that fills the context, starting at its BOS: (rows, context_length)."""
    rows = [ids[:context_length] for ids in tokenizer(stories).input_ids if len(ids) >= context_length]
    if not rows:
        raise InputError(
            f"no held-out story reaches {context_length} tokens; raise min_sentences or lower context_length"
        )
    return torch.tensor(rows, dtype=torch.long)


def repeated_span_rows(
    generator: torch.Generator, ordinary_ids: Tensor, bos_id: int, n_rows: int, context_length: int,
    min_span: int, max_span: int,
) -> Tensor:
    """(n_rows, context_length) ids: BOS, then segments of uniform random ordinary ids, about half of
    them copies of an earlier segment of the same row.

    Segment lengths are uniform in [min_span, max_span] and a copy repeats any earlier fresh segment,
    so the distance back to the copied tokens (the offset an induction head must find) varies. Dense
    copies make the induction signal strong, which brings the phase change early in training.
    """
    T = context_length
    picks = torch.randint(0, len(ordinary_ids), (n_rows, T), generator=generator)
    rows = ordinary_ids[picks]  # (rows, T)
    rows[:, 0] = bos_id
    n_draws = T // min_span + 1  # enough segments to fill a row
    lengths = torch.randint(min_span, max_span + 1, (n_rows, n_draws), generator=generator).tolist()
    choices = torch.rand(n_rows, n_draws, 2, generator=generator).tolist()
    for row, row_lengths, row_choices in zip(rows, lengths, choices):
        fresh: list[tuple[int, int]] = []  # (start, length) of segments that are not copies
        pos = 1
        for k, (u_copy, u_which) in zip(row_lengths, row_choices):
            if pos >= T:
                break
            if fresh and u_copy < 0.5:
                src, k = fresh[int(u_which * len(fresh))]
                k = min(k, T - pos)
                row[pos : pos + k] = row[src : src + k].clone()
            else:
                fresh.append((pos, min(k, T - pos)))
            pos += k
    return rows


@dataclass(frozen=True)
class StoryData:
    """The 'stories' preset's training mix: each batch holds `repeat_rows` repeated-span rows (the induction
    signal) and `text_rows` rows of stories and few-shot prompts, tokenized by a BPE learned from them.

    Text is kept a small share on purpose: in our width-64, 2-head runs, 0 text rows per 32 repeated rows
    put the induction jump at steps 1,100-1,500 (three seeds), 2 rows at ~2,300, and 8 rows had not
    jumped by step 3,000.
    """

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    repeat_rows: int = 32
    text_rows: int = 2
    context_length: int = 128
    min_span: int = 4  # segment lengths of the repeated-span rows
    max_span: int = 50
    vocab_size: int = 512

    def __post_init__(self) -> None:
        if self.repeat_rows < 0 or self.text_rows < 0 or self.repeat_rows + self.text_rows == 0:
            raise InputError(f"need a non-empty batch (repeat_rows={self.repeat_rows}, text_rows={self.text_rows})")
        if not 1 <= self.min_span <= self.max_span:
            raise InputError(f"need 1 ≤ min_span ≤ max_span (got {self.min_span}, {self.max_span})")

    def prepare(self, seed: int) -> tuple[PreTrainedTokenizerFast, PreparedData]:
        """The suite's tokenizer (learned from the generated text) and its packed rows."""
        documents, stories = generate_texts(seed, self.corpus)
        # BOS is an added special token: keep it out of the merges
        tokenizer = train_tokenizer((doc.replace(BOS_TEXT, "") for doc in documents), self.vocab_size)
        text_rows = pack_documents(tokenizer, documents, self.context_length)  # (rows, T)
        heldout = heldout_rows(tokenizer, stories, self.context_length)  # (rows, T)
        digest = hashlib.sha256(text_rows.numpy().tobytes() + heldout.numpy().tobytes()).hexdigest()
        return tokenizer, PreparedData(len(tokenizer), ordinary_token_ids(tokenizer), heldout, text_rows, digest)

    def batches(self, prepared: PreparedData, seed: int) -> Callable[[int], Tensor]:
        """step → (repeat_rows + text_rows, T) ids: repeated-span rows, then text rows drawn with replacement."""
        generator = torch.Generator().manual_seed(seed)

        def batch(_step: int) -> Tensor:
            repeated = repeated_span_rows(generator, prepared.ordinary_ids, 0, self.repeat_rows, self.context_length,
                                          self.min_span, self.max_span)
            picks = torch.randint(0, len(prepared.text_rows), (self.text_rows,), generator=generator)
            return torch.cat([repeated, prepared.text_rows[picks]])

        return batch
