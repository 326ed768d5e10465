"""Few-shot ICL evaluation: answer parsing and F1, prompts, batched greedy generation, task lists."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.adapters import LoadedModel, from_module, hooks
from dynamics.experiments.ablations import last_position_ablation
from dynamics.experiments.few_shot import (
    IclEvalConfig,
    build_eval_prompts,
    evaluate_few_shot,
    f1_score,
    greedy_generate,
    normalize_answer,
    parse_generation,
)
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.todd import REFERENCE_EVAL_TASKS, evaluation_tasks
from dynamics.toy.tokenizer import train_tokenizer
from tests.dynamics.icl_models import carrier_model, yes_no_tasks, yes_no_tokenizer

SHARED_TASKS = Path(__file__).resolve().parents[3] / "shared" / "icl-tasks"


def test_answer_parsing_and_f1_match_hand_examples() -> None:
    assert parse_generation(" Paris, France\nQ:") == " Paris"
    assert parse_generation("  the U.S. army!") == "  the U.S. army"
    assert parse_generation("\n\n:") == ""
    assert normalize_answer(" The  Eiffel-Tower! ") == "eiffeltower"
    assert normalize_answer("An apple a day") == "apple day"
    assert f1_score("Paris France", "paris") == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert f1_score("an apple", "Apple.") == 1.0
    assert f1_score("a b b", "b b c") == pytest.approx(0.8)  # 'a' is an article: precision 1, recall 2/3
    assert f1_score("", "x") == 0.0 and f1_score("", "") == 0.0 and f1_score("dog", "cat") == 0.0


@pytest.fixture(scope="module")
def tasks():
    return builtin_tasks()


@pytest.fixture(scope="module")
def tokenizer(tasks):
    texts = [f"Q: {x}\nA: {y}\n\n" for task in tasks.values() for x, y in task.train + task.valid]
    return train_tokenizer(texts, vocab_size=400)


def test_prompts_take_queries_in_valid_order_and_shuffle_only_labels(tasks, tokenizer) -> None:
    config = IclEvalConfig(n_shots=3, n_queries=5, seed=7)
    prompts = build_eval_prompts({"antonym": tasks["antonym"]}, tokenizer, config)
    task = prompts.few_shot.tasks[0]
    assert [p.prompt.query for p in task.clean] == [x for x, _ in tasks["antonym"].valid[:5]]
    train = set(tasks["antonym"].train)
    for clean, shuffled, bare in zip(task.clean, task.corrupted, prompts.zero_shot[0]):
        demos = clean.prompt.demonstrations
        assert len(set(demos)) == 3 and set(demos) <= train
        assert [x for x, _ in shuffled.prompt.demonstrations] == [x for x, _ in demos]
        assert sorted(y for _, y in shuffled.prompt.demonstrations) == sorted(y for _, y in demos)
        assert tokenizer.decode(list(bare.input_ids)) == f"<|endoftext|>Q: {clean.prompt.query}\nA:"
        assert bare.target_id == clean.target_id == tokenizer(f" {clean.prompt.target}")["input_ids"][0]
    again = build_eval_prompts({"antonym": tasks["antonym"]}, tokenizer, config)
    assert again.settings() == prompts.settings()  # same seed, same prompts (content hashes)
    other = build_eval_prompts({"antonym": tasks["antonym"]}, tokenizer, IclEvalConfig(n_shots=3, n_queries=5, seed=8))
    assert other.settings()["prompts_sha256"] != prompts.settings()["prompts_sha256"]


def test_fitting_keeps_the_tasks_whose_prompts_fit(tasks, tokenizer) -> None:
    prompts = build_eval_prompts({n: tasks[n] for n in ("antonym", "choose_last_of_5")}, tokenizer,
                                 IclEvalConfig(n_shots=4, n_queries=3))
    lengths = {t.task: max(len(p.input_ids) for p in t.clean + t.corrupted) for t in prompts.few_shot.tasks}
    assert lengths["antonym"] < lengths["choose_last_of_5"]
    n_ctx = lengths["antonym"] + 4  # room for the prompt and 5 new tokens (the last needs no position)
    assert prompts.fitting(n_ctx, 5).task_names == ("antonym",)
    assert len(prompts.fitting(n_ctx, 5).zero_shot) == 1
    assert prompts.fitting(lengths["choose_last_of_5"] + 4, 5).task_names == ("antonym", "choose_last_of_5")
    with pytest.raises(ValueError, match="no evaluation task has prompts of at most"):
        prompts.fitting(n_ctx - 1, 5)


def _random_model(family: str, vocab_size: int) -> LoadedModel:
    torch.manual_seed(3)
    if family == "gpt2":  # learned absolute positions: wrong position ids would change the tokens
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                           initializer_range=0.3))
    else:
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=256, rotary_pct=0.25, initializer_range=0.3))
    return from_module(model, attn_implementation="sdpa")


@contextlib.contextmanager
def _reference_ablation(model: LoadedModel, layer: int, head: int, value: torch.Tensor):
    """The reference's hook: head's slice at position −1 of whatever the model processes (batch of one)."""

    def hook(_module, args):
        z = args[0].clone()
        z[:, -1, model.head_slice(head)] = value
        return (z, *args[1:])

    with hooks([model.o_proj(layer).register_forward_pre_hook(hook)]):
        yield


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2"])
def test_batched_generation_equals_hf_generate_one_prompt_at_a_time(family: str, tasks, tokenizer) -> None:
    model = _random_model(family, len(tokenizer))
    prompts = build_eval_prompts({n: tasks[n] for n in ("antonym", "choose_first_of_3")}, tokenizer,
                                 IclEvalConfig(n_shots=2, n_queries=3))
    encoded = [p for t in prompts.few_shot.tasks for p in t.clean]
    assert len({len(p.input_ids) for p in encoded}) > 2  # right padding is exercised
    value = torch.randn(model.d_head)
    values = torch.zeros(model.n_layers, model.n_heads, model.d_head)
    values[1, 3] = value
    stop = 5
    for ablate in (False, True):
        intervention = last_position_ablation(model, [(1, 3)], values) if ablate else None
        batched = greedy_generate(model, encoded, 5, stop, intervention)
        for row, prompt in enumerate(encoded):
            ids = torch.tensor([prompt.input_ids])
            context = _reference_ablation(model, 1, 3, value) if ablate else contextlib.nullcontext()
            with context, torch.no_grad():
                out = model.model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=stop, pad_token_id=stop)
            new = out[0, ids.shape[1]:].tolist()
            assert batched.new_ids[row] == (new[: new.index(stop)] if stop in new else new)
            assert int(batched.first_argmax[row]) == new[0]
    plain = greedy_generate(model, encoded, 5, stop)
    ablated = greedy_generate(model, encoded, 5, stop, last_position_ablation(model, [(1, 3)], values))
    assert plain.new_ids != ablated.new_ids  # the ablation is not a no-op here


def test_constructed_model_answers_every_query() -> None:
    tokenizer = yes_no_tokenizer()
    config = IclEvalConfig(n_shots=4, n_queries=6)
    prompts = build_eval_prompts(yes_no_tasks(), tokenizer, config)
    accuracy = evaluate_few_shot(carrier_model(tokenizer), prompts, config)
    assert accuracy.task_means() == {"yes": {"f1": 1.0, "top1": 1.0}, "no": {"f1": 1.0, "top1": 1.0}}
    assert accuracy.model_means() == {"f1": 1.0, "top1": 1.0}
    assert all(len(v) == 6 for v in accuracy.f1.values())


@pytest.mark.skipif(not SHARED_TASKS.is_dir(), reason="shared ICL task folder absent")
def test_reference_evaluation_tasks_load_with_the_ablation_split() -> None:
    tasks = evaluation_tasks(SHARED_TASKS)
    assert set(tasks) <= set(REFERENCE_EVAL_TASKS) and len(tasks) >= 10
    assert list(tasks) == [n for n in REFERENCE_EVAL_TASKS if n in tasks]  # the reference's order
    for task in tasks.values():
        n = len(json.loads(Path(task.source).read_text()))
        rest = math.ceil(0.9 * n)  # test_size 0.9: ≈ 10 % train, then 90 % of the rest is valid
        assert (len(task.train), len(task.valid)) == (n - rest, math.ceil(0.9 * rest)), task.name


def test_evaluation_tasks_default_and_bad_folder(tmp_path: Path) -> None:
    assert evaluation_tasks() == builtin_tasks()
    with pytest.raises(FileNotFoundError, match="none of the reference evaluation tasks"):
        evaluation_tasks(tmp_path)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="n_queries must be at least 1 .*n_shots must be at least 0"):
        IclEvalConfig(n_queries=0, n_shots=-1)
    assert "batch_size" not in IclEvalConfig().settings() and IclEvalConfig().settings()["n_shots"] == 10
