"""The project's own procedurally generated ICL tasks, named like their Todd et al. counterparts.

Deterministic: the same tasks and splits on every machine (seeded with `BUILTIN_SEED`); the facts come
from `dynamics.tasks.wordlists`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dynamics.tasks import wordlists
from dynamics.tasks.base import IclTask, Row, split_rows

BUILTIN_SEED = 0  # fixes the generated list tasks and every built-in split
LIST_TASK_ROWS = 300  # rows generated per list (extractive) task


def _word_pool() -> list[str]:
    """Distinct single words from every list, sorted so generation does not depend on dict order."""
    words = set(wordlists.NOUNS) | set(wordlists.ADJECTIVES) | set(wordlists.VERBS)
    words |= set(wordlists.ANIMALS) | set(wordlists.FRUITS) | set(wordlists.COLORS)
    return sorted(words)


def _neighbour_rows(step: int) -> list[Row]:
    """(item, item `step` places later) within each ordered sequence (days, months, numbers, letters)."""
    rows = []
    for seq in wordlists.SEQUENCES:
        pairs = zip(seq, seq[1:]) if step > 0 else zip(seq[1:], seq)
        rows += list(pairs)
    return rows


def _pick_rows(size: int, position: Callable[[int], int], rng: np.random.RandomState) -> list[Row]:
    """Lists of `size` distinct words; the output is the word at `position(size)`."""
    pool = _word_pool()
    rows = []
    for _ in range(LIST_TASK_ROWS):
        items = [pool[i] for i in rng.choice(len(pool), size, replace=False)]
        rows.append((", ".join(items), items[position(size)]))
    return rows


def _odd_one_rows(size: int, target: Sequence[str], distractors: Sequence[str], rng: np.random.RandomState) -> list[Row]:
    """Lists of one `target` word among `size - 1` distractors; the output is the target word."""
    others = sorted(set(distractors) - set(target))
    rows = []
    for _ in range(LIST_TASK_ROWS):
        items = [others[i] for i in rng.choice(len(others), size - 1, replace=False)]
        answer = target[rng.randint(len(target))]
        items.insert(rng.randint(size), answer)
        rows.append((", ".join(items), answer))
    return rows


def _builtin_rows() -> dict[str, list[Row]]:
    words = _word_pool()
    rng = np.random.RandomState(BUILTIN_SEED)
    positions = {"first": lambda k: 0, "middle": lambda k: k // 2, "last": lambda k: k - 1}
    rows: dict[str, list[Row]] = {
        "capitalize": [(w, w.capitalize()) for w in words],
        "lowercase_first_letter": [(w.upper(), w[0]) for w in words],
        "lowercase_last_letter": [(w.upper(), w[-1]) for w in words],
        "word_length": [(w, str(len(w))) for w in words],
        "next_item": _neighbour_rows(+1),
        "prev_item": _neighbour_rows(-1),
        "singular-plural": sorted(wordlists.NOUNS.items()),
        "present-past": sorted(wordlists.VERBS.items()),
        "antonym": sorted(wordlists.ANTONYMS.items()) + sorted((b, a) for a, b in wordlists.ANTONYMS.items()),
    }
    for size in (3, 5):
        for where, position in positions.items():
            rows[f"choose_{where}_of_{size}"] = _pick_rows(size, position, rng)
        rows[f"fruit_v_animal_{size}"] = _odd_one_rows(size, wordlists.FRUITS, wordlists.ANIMALS, rng)
        rows[f"color_v_animal_{size}"] = _odd_one_rows(size, wordlists.COLORS, wordlists.ANIMALS, rng)
    return rows


def builtin_tasks() -> dict[str, IclTask]:
    """The project's own procedurally generated tasks, named like their Todd et al. counterparts.

    Deterministic: the same tasks and splits on every machine (seeded with `BUILTIN_SEED`).
    """
    tasks = {}
    for name, rows in _builtin_rows().items():
        train, valid = split_rows(rows, BUILTIN_SEED)
        tasks[name] = IclTask(name=name, train=train, valid=valid, source="builtin")
    return tasks
