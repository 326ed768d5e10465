"""Built-in tasks, the Todd-format loader and its split, and prompt sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dynamics.tasks.base import IclTask, sample_prompts, split_rows
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.todd import REFERENCE_FV_TASKS, load_task_dir

SHARED_TASKS = Path("/work/shared/icl-tasks")


def write_task(root: Path, folder: str, name: str, data) -> Path:
    path = root / folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_builtin_tasks_are_many_deterministic_and_correct() -> None:
    tasks = builtin_tasks()
    assert len(tasks) >= 12
    assert builtin_tasks() == tasks
    for task in tasks.values():
        assert task.train and task.valid and not set(task.train) & set(task.valid), task.name
    rows = {name: task.train + task.valid for name, task in tasks.items()}
    assert all(y == x.capitalize() for x, y in rows["capitalize"])
    assert all(y == x[0].lower() and x.isupper() for x, y in rows["lowercase_first_letter"])
    assert all(y == str(len(x)) for x, y in rows["word_length"])
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    consecutive = {(a, b) for seq in (days, "abcdefghijklmnopqrstuvwxyz") for a, b in zip(seq, seq[1:])}
    assert set(rows["next_item"]) & consecutive and set(rows["prev_item"]) & {(b, a) for a, b in consecutive}
    assert not {(b, a) for a, b in rows["next_item"]} & consecutive
    assert all(y == x + "s" or y in ("mice", "feet", "teeth", "geese", "people", "children", "women", "sheep", "fish")
               or y.endswith(("es", "ves")) for x, y in rows["singular-plural"])
    for x, y in tasks["choose_middle_of_5"].train:
        assert x.split(", ")[2] == y
    for x, y in tasks["choose_last_of_3"].train:
        assert x.split(", ")[-1] == y
    for x, y in tasks["fruit_v_animal_3"].train:
        assert len(x.split(", ")) == 3 and y in x.split(", ")


@pytest.mark.parametrize("n", [2, 7, 10, 100, 700])
def test_split_sizes_follow_sklearn_rounding(n: int) -> None:
    rows = [(str(i), str(i)) for i in range(n)]
    train, valid = split_rows(rows, seed=0)
    n_rest = math.ceil(0.3 * n)
    assert len(train) == n - n_rest
    assert len(valid) == math.ceil(0.3 * n_rest)
    assert not set(train) & set(valid)


def test_split_is_the_two_stage_permutation() -> None:
    rows = [(str(i), f"y{i}") for i in range(20)]
    train, valid = split_rows(rows, seed=5)
    order = np.random.RandomState(5).permutation(20)  # rows → (train = order[6:], rest = order[:6])
    rest = [rows[i] for i in order[:6]]
    assert train == tuple(rows[i] for i in order[6:])
    assert valid == tuple(rest[i] for i in np.random.RandomState(5).permutation(6)[:2])
    assert split_rows(rows, seed=6) != (train, valid)


def test_700_rows_split_like_the_reference() -> None:
    train, valid = split_rows([(str(i), "") for i in range(700)], seed=0)
    assert (len(train), len(valid)) == (490, 63)


def test_load_task_dir_reads_stringifies_and_splits(tmp_path: Path) -> None:
    write_task(tmp_path, "abstractive", "count", [{"input": i, "output": i + 1, "extra": 0} for i in range(30)])
    write_task(tmp_path, "extractive", "pick_train", [{"input": f"a{i}, b", "output": f"a{i}"} for i in range(10)])
    tasks = load_task_dir(tmp_path)
    assert set(tasks) == {"count", "pick_train"}
    count = tasks["count"]
    assert all(isinstance(x, str) and int(y) == int(x) + 1 for x, y in count.train + count.valid)
    assert (len(count.train), len(count.valid)) == (21, 3)
    assert count.source.endswith("abstractive/count.json")
    assert load_task_dir(tmp_path, ["pick_train"])["pick_train"].train == tasks["pick_train"].train
    assert load_task_dir(tmp_path, ["count"], seed=1)["count"].train != count.train


def test_loader_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; pass the folder"):
        load_task_dir(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"no task file 'nope.json' under .*abstractive/, extractive/, new_tasks/"):
        load_task_dir(tmp_path, ["nope"])
    write_task(tmp_path, "new_tasks", "broken", '[{"input": "a", "output"')
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON"):
        load_task_dir(tmp_path, ["broken"])
    write_task(tmp_path, "new_tasks", "shape", {"input": "a", "output": "b"})
    with pytest.raises(ValueError, match=r"shape.json must be a JSON list of objects with 'input' and 'output'"):
        load_task_dir(tmp_path, ["shape"])
    write_task(tmp_path, "new_tasks", "keys", [{"input": "a", "answer": "b"}])
    with pytest.raises(ValueError, match="must be a JSON list of objects"):
        load_task_dir(tmp_path, ["keys"])
    write_task(tmp_path, "new_tasks", "tiny", [{"input": "a", "output": "b"}])
    with pytest.raises(ValueError, match=r"tiny.json has 1 rows; a task needs at least 2"):
        load_task_dir(tmp_path, ["tiny"])


def test_sample_prompts_draws_train_demos_and_valid_queries() -> None:
    task = IclTask("t", train=tuple((f"x{i}", f"y{i}") for i in range(12)), valid=(("q0", "t0"), ("q1", "t1")))
    prompts = sample_prompts(task, 50, 10, 3)
    assert prompts == sample_prompts(task, 50, 10, np.random.default_rng(3))
    assert prompts != sample_prompts(task, 50, 10, 4)
    for p in prompts:
        assert len(set(p.demonstrations)) == 10 and set(p.demonstrations) <= set(task.train)
        assert (p.query, p.target) in task.valid
    assert {p.query for p in prompts} == {"q0", "q1"}
    text = prompts[0].text("<|endoftext|>")
    x, y = prompts[0].demonstrations[0]
    assert text.startswith(f"<|endoftext|>Q: {x}\nA: {y}\n\n") and text.endswith(f"Q: {prompts[0].query}\nA:")


def test_shuffled_labels_permute_demonstration_outputs_only() -> None:
    task = IclTask("t", train=tuple((f"x{i}", f"y{i}") for i in range(30)), valid=(("q", "t"),))
    moved = 0
    for p in sample_prompts(task, 20, 8, 0, shuffle_labels=True):
        inputs = [x[1:] for x, _ in p.demonstrations]
        outputs = [y[1:] for _, y in p.demonstrations]
        assert sorted(outputs) == sorted(inputs) and len(set(inputs)) == 8
        assert (p.query, p.target) == ("q", "t")
        moved += sum(x != y for x, y in zip(inputs, outputs))
    assert moved > 100  # a random permutation of 8 keeps ~1 fixed point on average
    for p in sample_prompts(task, 20, 8, 0):
        assert all(x[1:] == y[1:] for x, y in p.demonstrations)


def test_sample_prompts_rejects_too_few_rows() -> None:
    task = IclTask("small", train=(("a", "b"),) * 3, valid=(("c", "d"),))
    with pytest.raises(ValueError, match=r"task 'small' has 3 train and 1 valid rows; 10-shot prompts need 10"):
        sample_prompts(task, 1, 10, 0)
    with pytest.raises(ValueError, match="valid rows"):
        sample_prompts(IclTask("empty", train=task.train, valid=()), 1, 2, 0)


@pytest.mark.skipif(not SHARED_TASKS.is_dir(), reason="reference task files not present")
def test_reference_tasks_load() -> None:
    tasks = load_task_dir(SHARED_TASKS, REFERENCE_FV_TASKS)
    assert list(tasks) == list(REFERENCE_FV_TASKS) and len(tasks) == 29
    assert (len(tasks["choose_middle_of_5_train"].train), len(tasks["choose_middle_of_5_train"].valid)) == (490, 63)
    assert len(tasks["verb_v_adjective_5"].train) == 700  # the full 1000-row file
    assert tasks["animal_v_object_5_val"].source.endswith("extractive/animal_v_object_5_val.json")
    for task in tasks.values():
        sample_prompts(task, 2, 10, 0)
    with pytest.raises(ValueError, match=r"french-english.json is not valid JSON"):
        load_task_dir(SHARED_TASKS, ["french-english"])
    assert len(load_task_dir(SHARED_TASKS, ["french-english_train"])["french-english_train"].train) > 0
