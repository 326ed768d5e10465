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

from dynamics.adapters import LoadedModel, from_module
from tests.dynamics.attention_probe import returns_attention_weights

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
