"""Todd et al.'s task files: `<root>/{abstractive,extractive,new_tasks}/<name>.json`, and the reference's task lists.

Each file is a JSON list of {"input": …, "output": …} objects. The reference scores FV heads on 29 of
them and measures few-shot accuracy on 19 others (docs/methods.md, "Tasks").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from dynamics.errors import InputError, MissingInputError
from dynamics.tasks.base import IclTask, split_rows
from dynamics.tasks.builtin import builtin_tasks

# docs/methods.md, "FV task list": the 29 tasks the reference averages FV scores over, in its order (the
# order fixes its RNG stream). Two entries are not `_train` files, as in the reference.
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
        raise MissingInputError(
            f"task directory {root} does not exist; pass the folder that contains {', '.join(TASK_FOLDERS)}/"
        )
    if names is None:
        names = sorted({path.stem for folder in TASK_FOLDERS for path in (root / folder).glob("*.json")})
    return {name: _load_task_file(_find_task_file(root, name), name, seed, test_size) for name in names}


def _find_task_file(root: Path, name: str) -> Path:
    matches = [root / folder / f"{name}.json" for folder in TASK_FOLDERS if (root / folder / f"{name}.json").is_file()]
    if not matches:
        raise MissingInputError(
            f"no task file '{name}.json' under {root} (searched {', '.join(f + '/' for f in TASK_FOLDERS)}); "
            "check the task name or pass the folder that contains those subfolders"
        )
    return matches[0]


def _load_task_file(path: Path, name: str, seed: int, test_size: float) -> IclTask:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"task file {path} is not valid JSON ({err}); fix or re-download the file") from err
    if not isinstance(data, list) or not all(isinstance(r, dict) and "input" in r and "output" in r for r in data):
        raise InputError(
            f"task file {path} must be a JSON list of objects with 'input' and 'output' keys; fix the file"
        )
    if len(data) < MIN_ROWS:
        raise InputError(f"task file {path} has {len(data)} rows; a task needs at least {MIN_ROWS}")
    rows = [(_text(r["input"], path, i, "input"), _text(r["output"], path, i, "output")) for i, r in enumerate(data)]
    train, valid = split_rows(rows, seed, test_size)
    return IclTask(name=name, train=train, valid=valid, source=str(path))


def _text(value: object, path: Path, index: int, key: str) -> str:
    """A task value as text: strings as they are, numbers (some outputs are integers) as Python writes them."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"task file {path} row {index}: {key!r} is {json.dumps(value)[:40]}; every input and output must "
                     "be a string or a number, fix the file")


# docs/methods.md, "Evaluation task list": FV_PAPER_TEST (11) + NEW_EVAL_TASKS (8), file stems as the
# reference loads them; `capitalize_second_letter_train` is the reference's (a `_train` file among `_val` files).
REFERENCE_EVAL_TASKS: tuple[str, ...] = (
    "ag_news_val", "capitalize_first_letter_val", "conll2003_organization_val", "national_parks_val",
    "park-country_val", "person-occupation_val", "animal_v_object_3_val", "choose_first_of_5_val",
    "english-german_val", "person-instrument_val", "commonsense_qa_val",
    "capital_index_val", "capitalize_second_letter_train", "abstract_clf_val", "french-english_val",
    "bind_fruit_val", "bind_capital_par_val", "bind_capital_val", "bind_shape_val",
)
REFERENCE_EVAL_SPLIT = {"seed": 32, "test_size": 0.9}  # ablate.py's `load_dataset` defaults


def evaluation_tasks(tasks_dir: str | Path | None = None) -> dict[str, IclTask]:
    """The tasks ICL accuracy is measured on: the built-in tasks, or the reference's list from a Todd folder.

    From a folder, the tasks of `REFERENCE_EVAL_TASKS` whose files exist there, split as `ablate.py`
    splits them (≈10 % train, 81 % valid).
    """
    if tasks_dir is None:
        return builtin_tasks()
    root = Path(tasks_dir)
    present = [n for n in REFERENCE_EVAL_TASKS if any((root / d / f"{n}.json").is_file() for d in TASK_FOLDERS)]
    if not present:
        raise MissingInputError(
            f"none of the reference evaluation tasks ({REFERENCE_EVAL_TASKS[0]}, …) is under {root}; "
            "pass the folder that contains abstractive/, extractive/ and new_tasks/"
        )
    return load_task_dir(root, present, **REFERENCE_EVAL_SPLIT)
