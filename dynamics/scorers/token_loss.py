"""Model-level ICL token-loss score: how much better a late token is predicted than an early one.

Definition (docs/methods.md, "ICL token-loss score"; Olsson et al.'s sign): per-token loss
ℓ[i] = −log p(t_{i+1} | t_0..t_i), averaged over sequences at two positions; the score is
mean ℓ[late] − mean ℓ[early], so a negative score means later tokens benefit from context (in-context
learning). The reference uses early = 50, late = 500 on 1024-token Pile rows and reports the opposite
sign (ℓ[50] − ℓ[500]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dynamics.adapters import LoadedModel
from dynamics.errors import InputError

TOKEN_LOSS_METRIC = "icl_token_loss"


@torch.no_grad()
def token_loss_score(
    model: LoadedModel, tokens: Tensor, early: int, late: int, batch_size: int = 64
) -> dict[str, float]:
    """{'loss_early', 'loss_late', 'icl_token_loss' (= loss_late − loss_early)} over the rows of `tokens`.

    Args:
        tokens: (batch, T) ids with no padding; position i's loss predicts token i + 1, so
            `late` must be at most T − 2.
        early, late: token positions, 0 ≤ early < late.
    """
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise InputError(f"tokens must be a non-empty (batch, T) tensor (got shape {tuple(tokens.shape)})")
    T = tokens.shape[1]
    if not 0 <= early < late <= T - 2:
        raise InputError(
            f"positions early={early}, late={late} do not fit rows of {T} tokens; need 0 ≤ early < late ≤ {T - 2}"
        )
    positions = torch.tensor([early, late])
    total = torch.zeros(2, dtype=torch.float64)
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size].to(model.device)  # (batch, T)
        logits = model.model(input_ids=chunk[:, : late + 1]).logits[:, positions]  # (batch, 2, vocab)
        targets = chunk[:, positions + 1]  # (batch, 2)
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (batch, 2)
        total += losses.sum(dim=0).double().cpu()
    loss_early, loss_late = (total / tokens.shape[0]).tolist()
    return {"loss_early": loss_early, "loss_late": loss_late, TOKEN_LOSS_METRIC: loss_late - loss_early}
