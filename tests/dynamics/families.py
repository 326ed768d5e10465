"""Tiny random models of the Llama-layout families the public checkpoint suites use (OLMo, OLMo 2, Qwen2,
Mistral), each with its own quirk switched on so the parity tests exercise it."""

from __future__ import annotations

from torch import nn
from transformers import (
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OlmoConfig,
    OlmoForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

LLAMA_LAYOUT_FAMILIES = ("olmo", "olmo2", "qwen2", "mistral")


def tiny_llama_layout_model(family: str, *, vocab_size: int, n_layers: int, n_heads: int, d_model: int,
                            n_positions: int, initializer_range: float, **extra) -> nn.Module:
    """A random model of `family` with grouped-query attention (2 key/value heads) and:
    OLMo: clip_qkv (q, k, v clamped) and a final LayerNorm without parameters; OLMo 2: q/k norms and
    post-norms; Qwen2: q/k/v biases; Mistral: head_dim 16 apart from d_model / n_heads, a sliding window."""
    common = dict(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                  num_attention_heads=n_heads, num_key_value_heads=2, intermediate_size=2 * d_model,
                  max_position_embeddings=n_positions, initializer_range=initializer_range, **extra)
    if family == "olmo":
        return OlmoForCausalLM(OlmoConfig(clip_qkv=3.0, **common))
    if family == "olmo2":
        return Olmo2ForCausalLM(Olmo2Config(**common))
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(head_dim=16, sliding_window=n_positions, **common))
    raise ValueError(f"no tiny model for family {family!r}")
