"""Which attention a model runs, seen from outside: transformers 5 has a public setter for it but no getter."""

from __future__ import annotations

import torch

from dynamics.adapters import LoadedModel, hooks


def returns_attention_weights(loaded: LoadedModel) -> bool:
    """Whether a plain forward's attention modules hand back their weights: eager does, sdpa does not.

    A model left on an implementation that a plain forward cannot run (the FV path's shared-prefix
    attention, which needs its prefix) raises here instead.
    """
    returned: list[bool] = []
    with torch.no_grad(), hooks(
        loaded.attention(layer).register_forward_hook(lambda _module, _args, output: returned.append(output[1] is not None))
        for layer in range(loaded.n_layers)
    ):
        loaded.model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=loaded.device))
    return any(returned)
