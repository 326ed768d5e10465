"""FV prompt sets: sampling, template and tokenization, records round trip, provenance hash, errors."""

from __future__ import annotations

import json

import pytest

from dynamics.tasks.base import IclPrompt, IclTask
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.prompts import EncodedPrompt, PromptSet, build_prompt_set, encode_prompt_set, padded_batch
from dynamics.toy.tokenizer import train_tokenizer

NAMES = ["antonym", "choose_middle_of_5", "capitalize"]


@pytest.fixture(scope="module")
def tasks() -> dict[str, IclTask]:
    return builtin_tasks()


@pytest.fixture(scope="module")
def tokenizer(tasks):
    texts = [f"Q: {x}\nA: {y}\n\n" for task in tasks.values() for x, y in task.train + task.valid]
    return train_tokenizer(texts, vocab_size=400)


def build(tasks, tokenizer, **kwargs) -> PromptSet:
    options = {"names": NAMES, "n_shots": 3, "n_clean": 4, "n_corrupted": 5, "seed": 7, **kwargs}
    return build_prompt_set(tasks, tokenizer, **options)


def test_prompts_follow_the_reference_template_and_tokenization(tasks, tokenizer) -> None:
    prompt_set = build(tasks, tokenizer)
    assert prompt_set.task_names == tuple(NAMES)
    assert prompt_set.n_shots == 3
    for task in prompt_set.tasks:
        assert (len(task.clean), len(task.corrupted)) == (4, 5)
        for encoded in task.clean + task.corrupted:
            text = encoded.prompt.text("<|endoftext|>")
            assert text.startswith("<|endoftext|>Q: ") and text.endswith("\nA:")
            assert list(encoded.input_ids) == tokenizer(text, add_special_tokens=False)["input_ids"]
            assert encoded.input_ids[0] == 0  # the BOS text is id 0, as for GPT-NeoX
            assert encoded.target_id == tokenizer(" " + encoded.prompt.target)["input_ids"][0]
    train = dict(tasks["antonym"].train)
    for encoded in prompt_set.tasks[0].clean:  # clean demonstrations are real train rows, the query a valid row
        assert all(train[x] == y for x, y in encoded.prompt.demonstrations)
        assert (encoded.prompt.query, encoded.prompt.target) in tasks["antonym"].valid


def test_corrupted_prompts_shuffle_labels_among_the_same_inputs(tasks, tokenizer) -> None:
    prompt_set = build(tasks, tokenizer, n_shots=6, n_corrupted=20)
    train = dict(tasks["antonym"].train)
    shuffled = 0
    for encoded in prompt_set.tasks[0].corrupted:
        demos = encoded.prompt.demonstrations
        assert sorted(y for _, y in demos) == sorted(train[x] for x, _ in demos)
        shuffled += any(train[x] != y for x, y in demos)
    assert shuffled >= 15  # a random permutation of 6 distinct labels is rarely the identity


def test_same_seed_same_prompts_and_hash(tasks, tokenizer) -> None:
    first, again = build(tasks, tokenizer), build(tasks, tokenizer)
    assert first == again and first.content_hash == again.content_hash
    other = build(tasks, tokenizer, seed=8)
    assert other.content_hash != first.content_hash
    assert first.settings()["prompts_sha256"] == first.content_hash
    assert first.settings()["prompt_seed"] == 7


def test_a_task_prompts_do_not_depend_on_the_other_tasks(tasks, tokenizer) -> None:
    alone = build(tasks, tokenizer, names=["capitalize"])
    assert alone.tasks[0] == build(tasks, tokenizer).tasks[2]


def test_records_round_trip(tasks, tokenizer) -> None:
    prompt_set = build(tasks, tokenizer)
    records = json.loads(json.dumps(prompt_set.to_records()))  # what a warehouse column would hold
    assert len(records) == 3 * (4 + 5)
    fields = {"task", "task_index", "kind", "index", "demonstrations", "query", "target", "input_ids", "target_id"}
    assert fields <= set(records[0])
    rebuilt = PromptSet.from_records(records[::-1], seed=7)  # order of records does not matter
    assert rebuilt == prompt_set
    assert rebuilt.content_hash == prompt_set.content_hash


def test_explicit_prompts_are_encoded(tokenizer) -> None:
    clean = [IclPrompt("custom", (("cat", "dog"),), "sun", "moon")]
    corrupted = [IclPrompt("custom", (("red", "blue"), ("up", "down")), "hot", "cold")]
    prompt_set = encode_prompt_set({"custom": (clean, corrupted)}, tokenizer)
    task = prompt_set.tasks[0]
    assert prompt_set.seed is None and prompt_set.n_shots is None  # one- and two-shot prompts mixed
    assert tokenizer.decode(task.clean[0].input_ids) == "<|endoftext|>Q: cat\nA: dog\n\nQ: sun\nA:"
    assert task.corrupted[0].target_id == tokenizer(" cold")["input_ids"][0]


def test_padded_batch_pads_right() -> None:
    prompt = IclPrompt("t", (), "q", "a")
    ids, lengths = padded_batch([EncodedPrompt(prompt, (5, 6, 7), 1), EncodedPrompt(prompt, (8,), 1)])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]


def test_unknown_task_lists_the_known_ones(tasks, tokenizer) -> None:
    with pytest.raises(ValueError, match=r"unknown task 'antonyms'; known tasks: .*antonym, "):
        build(tasks, tokenizer, names=["antonyms"])


def test_too_few_rows_is_a_one_line_error(tokenizer) -> None:
    tiny = IclTask(name="tiny", train=(("a", "b"), ("c", "d")), valid=(("e", "f"),))
    with pytest.raises(ValueError, match=r"task 'tiny' has 2 train and 1 valid rows; 3-shot") as err:
        build({"tiny": tiny}, tokenizer, names=None)
    assert "\n" not in str(err.value)


def test_prompt_longer_than_context_names_task_and_lengths(tasks, tokenizer) -> None:
    prompt_set = build(tasks, tokenizer)
    longest = max(len(p.input_ids) for p in prompt_set.tasks[1].clean + prompt_set.tasks[1].corrupted)
    prompt_set.check_fits(longest)
    with pytest.raises(ValueError, match=rf"task 'choose_middle_of_5' has a prompt of {longest} tokens but the "
                                         rf"model's context is {longest - 1} tokens"):
        prompt_set.check_fits(longest - 1)
