"""The organism's synthetic task family (random bijections) and its training-data sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.tasks.base import IclPrompt, sample_prompts
from dynamics.tasks.synthetic import COMPACT_TEMPLATE, BijectionTasks
from dynamics.toy.episodes import EpisodeData, EpisodeSampler

FAMILY = BijectionTasks(n_tasks=4, n_words=16, n_demo_inputs=8)
BOS = 0  # the word tokenizer's <|endoftext|>


def small_data(**changes) -> EpisodeData:
    settings = dict(tasks=FAMILY, n_fillers=16, context_length=32, batch_size=20, max_span=12, max_shots=6,
                    switch_step=10, icl_share=0.8)
    return EpisodeData(**{**settings, **changes})


def episodes_of(row: np.ndarray, data: EpisodeData) -> list[list[str]] | None:
    """The row's words split at BOS into episodes, or None unless every piece alternates input, output words."""
    words = data.tokenizer().convert_ids_to_tokens(row.tolist())
    if row[0] != BOS:
        return None
    pieces, piece = [], []
    for word in words[1:] + ["<|endoftext|>"]:
        if word == "<|endoftext|>":
            pieces.append(piece)
            piece = []
        else:
            piece.append(word)
    inputs, outputs = set(data.tasks.inputs), set(data.tasks.outputs)
    for piece in pieces:
        if not all(w in (inputs if i % 2 == 0 else outputs) for i, w in enumerate(piece)):
            return None
    return pieces


def is_span_row(row: np.ndarray, data: EpisodeData) -> bool:
    """BOS, then a first span of min_span..max_span words written again right after it."""
    body = row[1:].tolist()
    return row[0] == BOS and BOS not in body and any(
        body[:n] == body[n : 2 * n] for n in range(data.min_span, data.max_span + 1)
    )


def test_tasks_are_distinct_bijections_of_the_shared_words() -> None:
    maps = FAMILY.maps()
    assert maps.shape == (4, 16)
    for mapping in maps:
        assert sorted(mapping.tolist()) == list(range(16))
    assert len({tuple(m) for m in maps.tolist()}) == 4
    tasks = FAMILY.tasks()
    assert list(tasks) == ["bijection_0", "bijection_1", "bijection_2", "bijection_3"]
    for task, mapping in zip(tasks.values(), maps):
        pairs = dict(task.train + task.valid)
        assert sorted(pairs) == list(FAMILY.inputs) and sorted(pairs.values()) == list(FAMILY.outputs)
        assert all(pairs[f"a{i:02d}"] == f"b{mapping[i]:02d}" for i in range(16))
        assert task.source == "synthetic" and task.template == COMPACT_TEMPLATE


def test_query_pool_is_disjoint_from_the_demonstrations_and_every_prompt_asks_a_new_input() -> None:
    tasks = FAMILY.tasks()
    demo_inputs = {FAMILY.inputs[i] for i in FAMILY.demo_inputs()}
    assert len(demo_inputs) == 8
    for task in tasks.values():
        train, valid = {x for x, _ in task.train}, {x for x, _ in task.valid}
        assert train == demo_inputs and valid == set(FAMILY.inputs) - demo_inputs
        for prompt in sample_prompts(task, 50, 6, 0) + sample_prompts(task, 50, 6, 1, shuffle_labels=True):
            shown = {x for x, _ in prompt.demonstrations}
            assert len(shown) == 6 and shown <= train
            assert prompt.query in valid and prompt.query not in shown
            assert (prompt.query, prompt.target) in task.valid


def test_maps_and_split_are_fixed_by_the_seed() -> None:
    again = BijectionTasks(n_tasks=4, n_words=16, n_demo_inputs=8)
    np.testing.assert_array_equal(again.maps(), FAMILY.maps())
    assert again.demo_inputs() == FAMILY.demo_inputs() and again.tasks() == FAMILY.tasks()
    other = BijectionTasks(n_tasks=4, n_words=16, n_demo_inputs=8, seed=FAMILY.seed + 1)
    assert not np.array_equal(other.maps(), FAMILY.maps())
    assert other.demo_inputs() != FAMILY.demo_inputs()


def test_compact_template_and_single_token_words() -> None:
    tokenizer = EpisodeData().tokenizer()
    prompt = IclPrompt("bijection_0", (("a03", "b17"), ("a11", "b02")), "a05", "b09", COMPACT_TEMPLATE)
    text = prompt.text(tokenizer.bos_token)
    assert text == "<|endoftext|> a03 b17 a11 b02 a05"
    assert tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids) == ["<|endoftext|>", "a03", "b17", "a11", "b02", "a05"]
    assert tokenizer(f" {prompt.target}").input_ids == tokenizer.convert_tokens_to_ids(["b09"])
    words = EpisodeData().words
    ids = tokenizer(" ".join(words)).input_ids
    assert len(ids) == len(words) == len(set(ids)) and tokenizer.unk_token_id not in ids


def test_task_family_errors_are_reported_together() -> None:
    with pytest.raises(ValueError, match=r"n_tasks must be at least 1.*n_demo_inputs must leave at least one query"):
        BijectionTasks(n_tasks=0, n_words=8, n_demo_inputs=8)


def test_span_rows_before_the_switch_then_the_episode_share() -> None:
    data = small_data()
    sampler = EpisodeSampler(data, seed=0)
    for row in sampler.batch(data.switch_step - 1).numpy():
        assert is_span_row(row, data) and episodes_of(row, data) is None
    rows = sampler.batch(data.switch_step).numpy()  # (batch, T): episode rows first
    assert rows.shape == (20, 32)
    kinds = ["episodes" if episodes_of(row, data) else "spans" if is_span_row(row, data) else "?" for row in rows]
    assert kinds == ["episodes"] * 16 + ["spans"] * 4  # round(0.8 · 20)


def draw_episodes(data: EpisodeData, n: int) -> list[tuple[list[tuple[str, str]], str, str]]:
    """(demonstrations, query, answer) of `n` episodes, checked for shape, distinct inputs and a new query."""
    sampler, tokenizer = EpisodeSampler(data, seed=1), data.tokenizer()
    episodes = []
    for _ in range(n):
        words = tokenizer.convert_ids_to_tokens(sampler.episode())
        assert words[0] == "<|endoftext|>" and len(words) % 2 == 1
        inputs, labels = words[1::2], words[2::2]
        assert data.min_shots + 1 <= len(inputs) <= data.max_shots + 1 and len(set(inputs)) == len(inputs)
        *shown, (query, answer) = zip(inputs, labels)
        assert query not in {x for x, _ in shown}
        episodes.append((shown, query, answer))
    return episodes


def test_every_episode_asks_a_new_input_of_one_task() -> None:
    maps = [dict(task.train + task.valid) for task in FAMILY.tasks().values()]
    for shown, query, answer in draw_episodes(small_data(), 300):
        assert any(all(m[x] == y for x, y in shown) and m[query] == answer for m in maps)


@pytest.mark.parametrize("label_noise", [0.5, 1.0])
def test_label_noise_changes_demonstrations_never_the_answer(label_noise: float) -> None:
    one_task = BijectionTasks(n_tasks=1, n_words=16, n_demo_inputs=8)
    (task,) = one_task.tasks().values()
    mapping = dict(task.train + task.valid)
    demos, agreeing = 0, 0
    for shown, query, answer in draw_episodes(small_data(tasks=one_task, label_noise=label_noise), 400):
        assert answer == mapping[query]
        demos += len(shown)
        agreeing += sum(mapping[x] == y for x, y in shown)
    # a noisy label is a uniform output word, so it is right by chance 1 time in 16
    assert agreeing / demos == pytest.approx(1 - label_noise + label_noise / 16, abs=0.04)


def test_sampler_is_deterministic_for_a_seed() -> None:
    data = small_data(label_noise=0.3)

    def draw(seed: int) -> list[torch.Tensor]:
        sampler = EpisodeSampler(data, seed)
        return [sampler.batch(step) for step in (0, 10, 11)]

    first = draw(3)
    assert all(torch.equal(a, b) for a, b in zip(first, draw(3)))
    assert not any(torch.equal(a, b) for a, b in zip(first, draw(4)))
