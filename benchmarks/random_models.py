"""Random-weight GPT-NeoX models with Pythia's shapes, built directly on the device a benchmark runs on.

Weights' values do not change timing (docs/performance.md, "How figures are measured"), so the
benchmarks time random models of the catalogue's shapes. Building under `torch.device(device)` in the
target dtype lets the GPU initialise the weights: a pythia-6.9b shape is ready in seconds instead of the
minutes a CPU initialisation and copy would take.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig

from dynamics.adapters import LoadedModel, from_module
from dynamics.sources.catalogue import pythia_model


@dataclass(frozen=True)
class NeoxShape:
    """The dimensions of a GPT-NeoX model (Pythia's layout: parallel residual, rotary on part of each head)."""

    label: str
    n_layers: int
    n_heads: int
    d_model: int
    vocab_size: int
    rotary_pct: float = 0.25

    def __post_init__(self) -> None:
        if min(self.n_layers, self.n_heads, self.d_model, self.vocab_size) < 1 or self.d_model % self.n_heads:
            raise ValueError(f"shape {self.label}: layers, heads, d_model and vocab must be positive and d_model "
                             f"divisible by heads (got {self})")

    @classmethod
    def from_catalogue(cls, name: str) -> NeoxShape:
        """The shape of a catalogued Pythia model, e.g. 'pythia-410m'."""
        spec = pythia_model(name)
        return cls(spec.name, spec.n_layers, spec.n_heads, spec.d_model, spec.vocab_rows, spec.rotary_dims / spec.d_head)

    def describe(self) -> str:
        return f"{self.label} ({self.n_layers} layers × {self.n_heads} heads, d_model {self.d_model}, vocab {self.vocab_size})"


def add_shape_arguments(group, layers: int, heads: int, d_model: int, vocab: int) -> None:
    """--shape (a catalogue model) or --layers/--heads/--d-model/--vocab, with these defaults."""
    group.add_argument("--shape", help="a catalogue model whose shape to use with random weights, e.g. pythia-410m")
    group.add_argument("--layers", type=int, default=layers)
    group.add_argument("--heads", type=int, default=heads)
    group.add_argument("--d-model", type=int, default=d_model)
    group.add_argument("--vocab", type=int, default=vocab)


def shape_from_arguments(args) -> NeoxShape:
    """The shape `add_shape_arguments` options name."""
    if args.shape:
        return NeoxShape.from_catalogue(args.shape)
    return NeoxShape("gpt_neox", args.layers, args.heads, args.d_model, args.vocab)


def neox_config(shape: NeoxShape, init_range: float = 0.02, bos_id: int = 0) -> GPTNeoXConfig:
    return GPTNeoXConfig(
        hidden_size=shape.d_model, num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
        intermediate_size=4 * shape.d_model, vocab_size=shape.vocab_size, max_position_embeddings=2048,
        rotary_pct=shape.rotary_pct, use_parallel_residual=True, initializer_range=init_range,
        bos_token_id=bos_id, eos_token_id=bos_id,
    )


def build_random_model(
    shape: NeoxShape, device: str | torch.device, dtype: torch.dtype, *, init_range: float = 0.02, seed: int = 0,
    bos_id: int = 0,
) -> LoadedModel:
    """A random-weight model of `shape`, allocated and initialised on `device` in `dtype`, SDPA attention."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            neox_config(shape, init_range, bos_id), dtype=dtype, attn_implementation="sdpa"
        )
    return from_module(model)


def release_device_memory() -> None:
    """Return freed tensors' memory to the device once the last reference to a model is gone."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
