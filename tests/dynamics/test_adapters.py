"""Adapter hook points against what transformers itself returns, for each supported family."""

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

from dynamics.adapters import LoadedModel, check_architecture, from_module, norm_rule
from dynamics.errors import InputError
from tests.dynamics.attention_probe import returns_attention_weights
from tests.dynamics.families import LLAMA_LAYOUT_FAMILIES, tiny_llama_layout_model

FAMILY_MODELS = {
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        initializer_range=0.3,
    )),
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, initializer_range=0.3,
    )),
    **{family: lambda family=family: tiny_llama_layout_model(
        family, vocab_size=40, n_layers=2, n_heads=4, d_model=32, n_positions=64, initializer_range=0.3)
       for family in LLAMA_LAYOUT_FAMILIES},
}


def tiny_model(family: str) -> LoadedModel:
    torch.manual_seed(0)
    return from_module(FAMILY_MODELS[family](), attn_implementation="sdpa")


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_captured_attention_equals_eager_output_attentions(family):
    loaded = tiny_model(family)
    input_ids = torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(1))
    captured: dict[int, torch.Tensor] = {}
    with torch.no_grad(), loaded.capture_attention(lambda layer, probs: captured.__setitem__(layer, probs.clone())):
        loaded.model(input_ids=input_ids)
    assert not returns_attention_weights(loaded)  # sdpa restored after the capture

    loaded.model.set_attn_implementation("eager")
    with torch.no_grad():
        expected = loaded.model(input_ids=input_ids, output_attentions=True).attentions
    assert sorted(captured) == list(range(loaded.n_layers))
    for layer in range(loaded.n_layers):
        assert captured[layer].shape == (3, loaded.n_heads, 12, 12)
        torch.testing.assert_close(captured[layer], expected[layer])
    assert not torch.allclose(captured[0], captured[1])  # each layer its own pattern, not one repeated


@pytest.mark.parametrize("family", sorted(FAMILY_MODELS))
def test_norm_rule_reproduces_the_final_norm(family):
    loaded = tiny_model(family)
    norm = loaded.model.get_submodule(loaded.family.final_norm)
    with torch.no_grad():
        for parameter in norm.parameters():  # gains and biases away from 1 / 0, so leaving one out shows
            parameter.add_(0.3 * torch.randn_like(parameter))
        hidden = 2 + 3 * torch.randn(5, loaded.d_model)  # off-centre, so centring matters
        rule = norm_rule(norm)
        centred = hidden - hidden.mean(-1, keepdim=True) if rule.centres else hidden
        expected = centred / (centred.pow(2).mean(-1, keepdim=True) + rule.eps).sqrt()
        bias = getattr(norm, "bias", None)
        expected = expected * (1 if rule.weight is None else rule.weight) + (0 if bias is None else bias)
        torch.testing.assert_close(norm(hidden), expected, atol=1e-5, rtol=1e-5)


def test_head_width_and_context_come_from_the_config():
    loaded = from_module(tiny_llama_layout_model("mistral", vocab_size=40, n_layers=1, n_heads=4, d_model=32,
                                                 n_positions=64, initializer_range=0.3))
    assert (loaded.d_model, loaded.n_heads, loaded.d_head) == (32, 4, 16)  # head_dim set apart from 32 / 4
    assert loaded.o_proj_weight(0).shape == (32, 64)
    assert loaded.n_ctx == 64
    loaded.model.config.sliding_window = 16  # the fast FV path attends to the whole prefix: stay inside the window
    assert loaded.n_ctx == 16


def test_an_unknown_architecture_is_named_before_any_weights_load(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "mamba", "hidden_size": 32}')
    with pytest.raises(InputError, match=r"^org/tiny-mamba: model type 'mamba' has no adapter; supported: gpt2, "
                                         r"gpt_neox, llama, mistral, olmo, olmo2, qwen2 \(from config.json\)$"):
        check_architecture(config, "org/tiny-mamba")
    config.write_text('{"model_type": "olmo2"}')
    assert check_architecture(config, "org/tiny-olmo2") == "olmo2"
