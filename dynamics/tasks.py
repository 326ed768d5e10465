"""ICL tasks and few-shot prompts in the reference template.

A task is a name plus deterministic train/valid pools of (input, output) pairs. Prompts follow the
reference (algorithms.md §2.3): BOS text, then for each demonstration `Q: x\\nA: y\\n\\n`, then
`Q: x_q\\nA:`; the target is ` y_q` and the scored token is the first token of ` y_q` tokenized alone.

Tasks come from two places: `builtin_tasks()` (procedurally generated from the word lists in
`dynamics.wordlists`, always available offline) and `load_task_dir(root)` (Todd et al.'s JSON files in
a folder the caller names). Both split rows with `split_rows`, the reference's two-stage split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynamics import wordlists


@dataclass(frozen=True)
class Template:
    """The reference prompt template (Yin & Steinhardt's `find_fv_heads.py` defaults)."""

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
    source: str = "builtin"  # 'builtin' or the file it was read from


@dataclass(frozen=True)
class IclPrompt:
    """One few-shot prompt: demonstrations, a query, and the query's target (without leading space)."""

    task: str
    demonstrations: tuple[tuple[str, str], ...]
    query: str
    target: str

    def text(self, template: Template, bos_text: str) -> str:
        """The prompt string, ending in the output prefix (the scored position is its last token)."""
        parts = [bos_text if template.prepend_bos else ""]
        for x, y in self.demonstrations:
            parts += [template.input_prefix, f" {x}", template.input_separator]
            parts += [template.output_prefix, f" {y}", template.output_separator]
        parts += [template.input_prefix, f" {self.query}", template.input_separator, template.output_prefix]
        return "".join(parts)


Row = tuple[str, str]

# algorithms.md §2.2: the 29 tasks the reference averages FV scores over, in its order (the order fixes
# its RNG stream). Two entries are not `_train` files, as in the reference.
REFERENCE_FV_TASKS: tuple[str, ...] = (
    "product-company_train", "landmark-country_train", "sentiment_train", "antonym_train",
    "concept_v_object_5_train", "concept_v_object_3_train", "fruit_v_animal_5_train", "synonym_train",
    "lowercase_first_letter_train", "object_v_concept_5_train", "choose_middle_of_5_train",
    "conll2003_person_train", "color_v_animal_5_train", "choose_last_of_3_train",
    "adjective_v_verb_3_train", "verb_v_adjective_5", "animal_v_object_5_val",
    "conll2003_location_train", "adjective_v_verb_5_train", "color_v_animal_3_train",
    "choose_middle_of_3_train", "object_v_concept_3_train", "capitalize_train",
    "fruit_v_animal_3_train", "choose_last_of_5_train", "choose_first_of_3_train",
    "verb_v_adjective_3_train", "english-spanish_train", "english-french_train",
)

TASK_FOLDERS = ("abstractive", "extractive", "new_tasks")
MIN_ROWS = 2  # the smallest table the two-stage split leaves a train row and a valid row in


def split_rows(rows: Sequence[Row], seed: int = 0, test_size: float = 0.3) -> tuple[tuple[Row, ...], tuple[Row, ...]]:
    """(train, valid) as the reference's `split_icl_dataset` builds them (algorithms.md §2.2).

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


def load_task_dir(
    root: str | Path, names: Iterable[str] | None = None, *, seed: int = 0, test_size: float = 0.3
) -> dict[str, IclTask]:
    """Read Todd-format task files from `root/{abstractive,extractive,new_tasks}/<name>.json`.

    `names` are file stems (`antonym_train`, `verb_v_adjective_5`, see `REFERENCE_FV_TASKS`); None
    reads every JSON file found. Values are stringified (some tasks have integer outputs). Each task
    is split with `split_rows(rows, seed, test_size)`; seed 0 is what `find_fv_heads.py` passes.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"task directory {root} does not exist; pass the folder that contains {', '.join(TASK_FOLDERS)}/"
        )
    if names is None:
        names = sorted({path.stem for folder in TASK_FOLDERS for path in (root / folder).glob("*.json")})
    return {name: _load_task_file(_find_task_file(root, name), name, seed, test_size) for name in names}


def _find_task_file(root: Path, name: str) -> Path:
    matches = [root / folder / f"{name}.json" for folder in TASK_FOLDERS if (root / folder / f"{name}.json").is_file()]
    if not matches:
        raise FileNotFoundError(
            f"no task file '{name}.json' under {root} (searched {', '.join(f + '/' for f in TASK_FOLDERS)}); "
            "check the task name or pass the folder that contains those subfolders"
        )
    return matches[0]


def _load_task_file(path: Path, name: str, seed: int, test_size: float) -> IclTask:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"task file {path} is not valid JSON ({err}); fix or re-download the file") from err
    if not isinstance(data, list) or not all(isinstance(r, dict) and "input" in r and "output" in r for r in data):
        raise ValueError(
            f"task file {path} must be a JSON list of objects with 'input' and 'output' keys; fix the file"
        )
    if len(data) < MIN_ROWS:
        raise ValueError(f"task file {path} has {len(data)} rows; a task needs at least {MIN_ROWS}")
    rows = [(str(r["input"]), str(r["output"])) for r in data]
    train, valid = split_rows(rows, seed, test_size)
    return IclTask(name=name, train=train, valid=valid, source=str(path))


def sample_prompts(
    task: IclTask,
    n: int,
    n_shots: int,
    rng: np.random.Generator | int,
    shuffle_labels: bool = False,
) -> list[IclPrompt]:
    """`n` prompts: `n_shots` demonstrations drawn without replacement from train, a query from valid.

    With `shuffle_labels` the demonstration outputs are permuted among the same inputs (the
    reference's corrupted prompts, algorithms.md §2.5); the query's target is never shuffled. An int
    `rng` seeds `numpy.random.default_rng`, so the same seed gives the same prompts.
    """
    if n_shots < 0 or n < 1:
        raise ValueError(f"need n ≥ 1 prompts and n_shots ≥ 0 (got n={n}, n_shots={n_shots})")
    if len(task.train) < n_shots or not task.valid:
        raise ValueError(
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
        prompts.append(IclPrompt(task=task.name, demonstrations=demonstrations, query=query, target=target))
    return prompts


# --- built-in tasks -------------------------------------------------------------------------------

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
