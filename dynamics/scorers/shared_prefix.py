"""Single-token attention against a prefix shared by many rows (the fast FV path).

The method is docs/methods.md, "Fast exact algorithm"; why the prefix is shared rather than copied per
row is docs/performance.md, "Shared prefix".

Each patched row of the fast FV scorer is the last token of one corrupted prompt. All rows of a prompt
attend to the same prefix keys/values (positions 0..T−2, unchanged by the patch) plus their own new
key/value. Giving every row its own copy of the prefix would re-read it once per row per layer;
here the prefix is read once per prompt per layer: one matrix product of all the prompt's row queries
with its prefix keys, one with its prefix values, and each row's own term merged in the same fp32
softmax.

The function is registered in transformers' `AttentionInterface` under `SHARED_PREFIX_ATTENTION`, so
the families' own attention modules (fused QKV, partial rotary, GQA, GPT-2's Conv1D) compute q, k, v
and the output projection; only the attention arithmetic is ours. Its extra input arrives as the
`shared_prefix` keyword, which every family's block passes through to the attention function.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from dynamics.errors import InputError

SHARED_PREFIX_ATTENTION = "fv_shared_prefix"


@dataclass(frozen=True)
class SharedPrefix:
    """One layer's prefix keys/values for P prompts, and which prefix positions are real."""

    keys: Tensor  # (prompt, kv_head, prefix_pos, d_head), rotary already applied
    values: Tensor  # (prompt, kv_head, prefix_pos, d_head)
    valid: Tensor  # (prompt, prefix_pos) bool: position < the prompt's last position (right padding)

    @cached_property
    def bias(self) -> Tensor:
        """(prompt, prefix_pos): 0 where valid, −inf on padding, in the keys' dtype (added to the scores)."""
        zeros = torch.zeros(self.valid.shape, dtype=self.keys.dtype, device=self.keys.device)
        return zeros.masked_fill(~self.valid, float("-inf"))


def shared_prefix_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    shared_prefix: SharedPrefix | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Attention output (rows, 1, head, d_head) for single-token rows, rows ordered prompt-major.

    `query` is (rows, head, 1, d_head); `key`/`value` are the rows' own (rows, kv_head, 1, d_head).
    Rows = prompts × rows_per_prompt, with the same rows_per_prompt for every prompt.
    """
    if shared_prefix is None:
        raise InputError(f"the {SHARED_PREFIX_ATTENTION!r} attention implementation needs a shared_prefix argument")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    n_prompts, n_kv, prefix_len, d_head = shared_prefix.keys.shape
    n_rows, n_heads = query.shape[:2]
    per_prompt, group = n_rows // n_prompts, n_heads // n_kv
    # Query head h reads kv head h // group (transformers' repeat_kv layout).
    q = query.reshape(n_prompts, per_prompt, n_kv, group, d_head).permute(0, 2, 1, 3, 4)  # (P, kv, A, G, d)
    q = q.reshape(n_prompts, n_kv, per_prompt * group, d_head)  # (P, kv, A·G, d)
    own_k = key.reshape(n_prompts, per_prompt, n_kv, 1, d_head).permute(0, 2, 1, 3, 4)  # (P, kv, A, 1, d)
    own_v = value.reshape(n_prompts, per_prompt, n_kv, 1, d_head).permute(0, 2, 1, 3, 4)  # (P, kv, A, 1, d)

    prefix_scores = torch.matmul(q, shared_prefix.keys.transpose(-1, -2))  # (P, kv, A·G, S)
    prefix_scores.mul_(scaling).add_(shared_prefix.bias[:, None, None, :])  # padding → −inf
    own_scores = (q.view(n_prompts, n_kv, per_prompt, group, d_head) * own_k).sum(-1) * scaling  # (P, kv, A, G)
    scores = torch.cat([prefix_scores, own_scores.reshape(n_prompts, n_kv, per_prompt * group, 1)], dim=-1)
    # fp32 softmax, cast back to the model dtype as transformers' eager attention does.
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (P, kv, A·G, S + 1)

    out = torch.matmul(probs[..., :prefix_len], shared_prefix.values)  # (P, kv, A·G, d)
    own_probs = probs[..., prefix_len:].view(n_prompts, n_kv, per_prompt, group, 1)
    out = out.view(n_prompts, n_kv, per_prompt, group, d_head) + own_probs * own_v  # (P, kv, A, G, d)
    out = out.permute(0, 2, 1, 3, 4).reshape(n_rows, 1, n_heads, d_head)  # (rows, 1, head, d)
    return out, None


def register_shared_prefix_attention() -> None:
    """Make `SHARED_PREFIX_ATTENTION` a valid `attn_implementation` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
