"""FV scores: the fast path equals the reference loop; a hand-built FV head wins; precision; bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from dynamics.adapters import LoadedModel, from_module
from dynamics.scorers.function_vectors import (
    FunctionVectorConfig,
    build_function_vector_prompts,
    choose_dtype,
    mean_head_activations,
    score_function_vector_heads,
    score_function_vectors,
    score_function_vectors_reference,
)
from dynamics.tasks.base import IclPrompt
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.prompts import PromptSet, TaskPrompts, build_prompt_set, encode_prompt_set
from dynamics.toy.tokenizer import train_tokenizer
from tests.dynamics.attention_probe import returns_attention_weights
from tests.dynamics.families import LLAMA_LAYOUT_FAMILIES, tiny_llama_layout_model

# Prompt lengths differ across these tasks (one word, a 5-word list, a capitalised word).
NAMES = ["antonym", "choose_middle_of_5", "capitalize"]
N_LAYERS, N_HEADS, D_MODEL = 3, 4, 32


@pytest.fixture(scope="module")
def tasks():
    return builtin_tasks()


@pytest.fixture(scope="module")
def tokenizer(tasks):
    texts = [f"Q: {x}\nA: {y}\n\n" for task in tasks.values() for x, y in task.train + task.valid]
    return train_tokenizer(texts + ["Q: word\nA: yes\n\nA: no\n\n"] * 20, vocab_size=400)


@pytest.fixture(scope="module")
def prompt_set(tasks, tokenizer) -> PromptSet:
    return build_prompt_set(tasks, tokenizer, names=NAMES, n_shots=3, n_clean=4, n_corrupted=3, seed=0)


def make_model(family: str, vocab_size: int, n_positions: int = 256) -> LoadedModel:
    """Random tiny model; initializer_range 0.4 so patches move probabilities by ~1e-2, not ~1e-6."""
    torch.manual_seed(0)
    common = {"vocab_size": vocab_size, "initializer_range": 0.4, "attn_implementation": "sdpa"}
    if family == "gpt_neox":  # parallel residual, rotary on a quarter of each head
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, intermediate_size=64,
            max_position_embeddings=n_positions, rotary_pct=0.25, use_parallel_residual=True, **common))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(
            n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, n_positions=n_positions, **common))
    elif family in LLAMA_LAYOUT_FAMILIES:
        model = tiny_llama_layout_model(family, n_layers=N_LAYERS, n_heads=N_HEADS, d_model=D_MODEL,
                                        n_positions=n_positions, **common)
    else:  # grouped-query attention: 4 query heads share 2 key/value heads
        model = LlamaForCausalLM(LlamaConfig(
            hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=n_positions, **common))
    return from_module(model)


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2", "llama", *LLAMA_LAYOUT_FAMILIES])
def test_fast_equals_reference_on_every_head(family: str, prompt_set: PromptSet, tokenizer) -> None:
    model = make_model(family, len(tokenizer))
    config = FunctionVectorConfig(batch_size=2)  # batches mix tasks and prompt lengths (right padding)
    means = mean_head_activations(model, prompt_set, config)
    reference = score_function_vectors_reference(model, prompt_set, means)
    fast = score_function_vectors(model, prompt_set, means, config)

    # The comparison below is not between zeros: effects are ~100× the tolerance.
    assert max(float(t.abs().max()) for t in reference.per_task.values()) > 1e-4
    torch.testing.assert_close(fast.fv, reference.fv, atol=1e-6, rtol=0)
    assert fast.per_task.keys() == reference.per_task.keys() == set(NAMES)
    for task in NAMES:
        torch.testing.assert_close(fast.per_task[task], reference.per_task[task], atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.fv, torch.stack([fast.per_task[t] for t in NAMES]).mean(0))
    assert not returns_attention_weights(model)  # the fast path restores the implementation


def test_standard_errors_equal_the_textbook_formula(prompt_set: PromptSet, tokenizer) -> None:
    """Per trial, the reference loop on a one-prompt set; then s/√n per task and √(Σ se²)/T over tasks."""
    model = make_model("gpt_neox", len(tokenizer))
    means = mean_head_activations(model, prompt_set)
    fast = score_function_vectors(model, prompt_set, means, FunctionVectorConfig(batch_size=2))
    per_task_se = []
    for t, task in enumerate(prompt_set.tasks):
        trials = torch.stack([
            score_function_vectors_reference(model, PromptSet((TaskPrompts(task.task, task.clean, (p,)),), 0),
                                             means[t : t + 1]).fv.double()
            for p in task.corrupted
        ])  # (trial, layer, head): each trial's indirect effect
        n = trials.shape[0]
        se = ((trials - trials.mean(0)).pow(2).sum(0) / (n - 1)).sqrt() / n**0.5
        torch.testing.assert_close(fast.per_task_stderr[task.task], se.float(), atol=1e-6, rtol=1e-4)
        per_task_se.append(se)
    expected = torch.stack(per_task_se).pow(2).sum(0).sqrt() / len(per_task_se)
    torch.testing.assert_close(fast.stderr, expected.float(), atol=1e-6, rtol=1e-4)
    assert float(fast.stderr.min()) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_equals_reference_on_cuda_and_bf16_is_finite(prompt_set: PromptSet, tokenizer) -> None:
    model = make_model("gpt_neox", len(tokenizer))
    model.model.to("cuda")
    means = mean_head_activations(model, prompt_set)
    reference = score_function_vectors_reference(model, prompt_set, means)
    fast = score_function_vectors(model, prompt_set, means)
    torch.testing.assert_close(fast.fv, reference.fv, atol=1e-5, rtol=0)
    with model.temporary_dtype(torch.bfloat16):
        low = score_function_vectors(model, prompt_set, mean_head_activations(model, prompt_set))
    assert low.dtype == torch.bfloat16 and low.is_finite()


def test_mean_activations_equal_a_per_prompt_loop(prompt_set: PromptSet, tokenizer) -> None:
    model = make_model("gpt_neox", len(tokenizer))
    means = mean_head_activations(model, prompt_set, FunctionVectorConfig(batch_size=5))
    assert means.shape == (len(NAMES), N_LAYERS, N_HEADS, D_MODEL // N_HEADS)
    captured = {}
    hooks = [
        model.o_proj(layer).register_forward_pre_hook(lambda _m, args, layer=layer: captured.__setitem__(layer, args[0]))
        for layer in range(N_LAYERS)
    ]
    for t, task in enumerate(prompt_set.tasks):
        total = torch.zeros(N_LAYERS, D_MODEL)
        for encoded in task.clean:
            with torch.no_grad():
                model.model(input_ids=torch.tensor([encoded.input_ids]))
            total += torch.stack([captured[layer][0, -1] for layer in range(N_LAYERS)])
        expected = (total / len(task.clean)).view(N_LAYERS, N_HEADS, -1)
        torch.testing.assert_close(means[t], expected, atol=1e-5, rtol=0)
    for hook in hooks:
        hook.remove()


FV_LAYER, FV_HEAD = 1, 2


def make_fv_head_model(vocab_size: int, answer_id: int) -> LoadedModel:
    """A GPT-2 in which only head (1, 2) can move the answer's logit, and does so by the task signal.

    Residual dimension 0 is reserved: only the answer token's embedding has it (value 5), no other
    component writes to it, and the (tied) unembedding reads it only for the answer token. Head (1, 2)
    attends uniformly (zero query/key weights), reads dimension 0 of its normed input into its first
    value dimension, and writes that back to dimension 0 with gain 10. Its last-position output is thus
    the share of answer tokens in the prompt: high in clean prompts (answers are demonstration outputs),
    about zero in corrupted ones. Patching the clean mean in raises the answer's probability; every
    other head's patch moves other dimensions only, a little.
    """
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=3, n_head=4, n_positions=128))
    d_head = 4
    with torch.no_grad():
        transformer = model.transformer
        transformer.wte.weight.mul_(10)
        transformer.wte.weight[:, 0] = 0
        transformer.wte.weight[answer_id, 0] = 5
        transformer.wpe.weight[:, 0] = 0
        for block in transformer.h:  # Conv1D weights are (in, out): column 0 writes residual dimension 0
            for write in (block.attn.c_proj, block.mlp.c_proj):
                write.weight[:, 0] = 0
                write.bias[0] = 0
        attn = transformer.h[FV_LAYER].attn
        columns = slice(FV_HEAD * d_head, (FV_HEAD + 1) * d_head)
        for part in range(3):  # query, key, value column blocks of c_attn
            offset = part * 16
            attn.c_attn.weight[:, offset + columns.start : offset + columns.stop] = 0
            attn.c_attn.bias[offset + columns.start : offset + columns.stop] = 0
        attn.c_attn.weight[0, 32 + columns.start] = 1  # value dim 0 ← normed residual dim 0
        attn.c_proj.weight[columns, :] = 0
        attn.c_proj.weight[columns.start, 0] = 10  # residual dim 0 ← value dim 0
    return from_module(model)


def test_the_constructed_fv_head_has_the_top_score(tasks, tokenizer) -> None:
    words = [x for x, _ in tasks["capitalize"].train[:40]]
    answer_id = tokenizer(" yes")["input_ids"][0]

    def prompts(label: str) -> list[IclPrompt]:
        return [IclPrompt("yes", tuple((w, label) for w in words[i * 5 : i * 5 + 4]), words[i * 5 + 4], "yes")
                for i in range(4)]

    prompt_set = encode_prompt_set({"yes": (prompts("yes"), prompts("no"))}, tokenizer)
    model = make_fv_head_model(len(tokenizer), answer_id)
    means = mean_head_activations(model, prompt_set)
    fast = score_function_vectors(model, prompt_set, means)

    top = divmod(int(fast.fv.argmax()), 4)
    assert top == (FV_LAYER, FV_HEAD)
    assert fast.fv[FV_LAYER, FV_HEAD] > 0.05
    others = fast.fv.clone()
    others[FV_LAYER, FV_HEAD] = 0
    assert others.abs().max() < fast.fv[FV_LAYER, FV_HEAD] / 10
    reference = score_function_vectors_reference(model, prompt_set, means)
    torch.testing.assert_close(fast.fv, reference.fv, atol=1e-6, rtol=0)


def test_non_finite_low_precision_scores_are_rescored_in_fp32(prompt_set: PromptSet, tokenizer) -> None:
    model = make_model("gpt2", len(tokenizer))
    with torch.no_grad():  # the last MLP's output overflows fp16 (~1e8 > 65504); fp32 and the final norm cope
        model.model.transformer.h[-1].mlp.c_fc.weight.normal_(0, 30)
        model.model.transformer.h[-1].mlp.c_proj.weight.fill_(300)
    model.model.half()
    model.dtype = torch.float16
    config = FunctionVectorConfig(batch_size=4)
    assert not score_function_vectors(model, prompt_set, mean_head_activations(model, prompt_set, config), config).is_finite()

    scores = score_function_vector_heads(model, prompt_set, config)
    assert scores.dtype == torch.float32 and scores.is_finite()
    assert next(model.model.parameters()).dtype == torch.float16 and model.dtype == torch.float16  # cast back


def test_choose_dtype() -> None:
    assert choose_dtype(143000, "cpu") == torch.float32
    assert choose_dtype(1000, "cuda") == torch.float32  # early checkpoints: fp16 attention underflows
    assert choose_dtype(None, "cuda") == torch.float32
    assert choose_dtype(2000, "cuda") == torch.bfloat16


def test_config_settings_and_validation(prompt_set: PromptSet) -> None:
    settings = FunctionVectorConfig().settings()
    assert settings["metric"] == "fv" and settings["n_shots"] == 10 and settings["seed"] == 42
    assert "batch_size" not in settings
    scored = prompt_set.settings()  # the prompts actually scored describe themselves
    assert scored["n_shots"] == 3 and scored["prompt_seed"] == 0 and "seed" not in scored
    assert scored["prompts_sha256"] == prompt_set.content_hash
    with pytest.raises(ValueError, match="n_clean must be at least 1 .*batch_size must be at least 1"):
        FunctionVectorConfig(n_clean=0, batch_size=0)


def test_build_function_vector_prompts_uses_the_config(tasks, tokenizer) -> None:
    config = FunctionVectorConfig(n_shots=2, n_clean=3, n_corrupted=2, seed=5)
    prompt_set = build_function_vector_prompts(tasks, tokenizer, config, names=["antonym"])
    task = prompt_set.tasks[0]
    assert (prompt_set.n_shots, len(task.clean), len(task.corrupted), prompt_set.seed) == (2, 3, 2, 5)
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: "):
        build_function_vector_prompts(tasks, tokenizer, config, names=["nope"])


def test_prompt_longer_than_the_context_is_refused(prompt_set: PromptSet, tokenizer) -> None:
    model = make_model("gpt2", len(tokenizer), n_positions=32)
    with pytest.raises(ValueError, match=r"task 'antonym' has a prompt of \d+ tokens but the model's context is 32"):
        mean_head_activations(model, prompt_set)
    with pytest.raises(ValueError, match="context is 32 tokens"):
        score_function_vectors(model, prompt_set, torch.zeros(3, N_LAYERS, N_HEADS, 8))


def test_means_of_the_wrong_shape_are_refused(prompt_set: PromptSet, tokenizer) -> None:
    model = make_model("gpt2", len(tokenizer))
    with pytest.raises(ValueError, match=r"means has shape \(2, 3, 4, 8\), expected \(3, 3, 4, 8\)"):
        score_function_vectors(model, prompt_set, torch.zeros(2, N_LAYERS, N_HEADS, 8))
