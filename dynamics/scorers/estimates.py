"""Head scores with their uncertainty: every stored score is a mean over samples, stored with its standard error.

Definitions: docs/methods.md, "Standard errors". A score that is not significantly above zero is not a
finding, so the analyses compare each score with its standard error (warehouse/sql/analysis.sql).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class HeadScores:
    """Per-metric (layer, head) scores and their standard errors (same keys; NaN where undefined)."""

    values: dict[str, Tensor]
    stderr: dict[str, Tensor]

    def __post_init__(self) -> None:
        if self.values.keys() != self.stderr.keys():
            raise ValueError(f"scores and standard errors name different metrics ({sorted(self.values)} vs "
                             f"{sorted(self.stderr)})")


def mean_and_stderr(samples: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Mean over `dim` and its standard error s/√n (s with n − 1 degrees of freedom; NaN for n < 2)."""
    samples = samples.double()
    n = samples.shape[dim]
    mean = samples.mean(dim=dim)
    if n < 2:
        return mean, torch.full_like(mean, float("nan"))
    return mean, (samples.var(dim=dim, correction=1) / n).sqrt()


def ratio_and_stderr(sums: Tensor, counts: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Pooled mean Σ sums / Σ counts over `dim` (one entry per sequence) and its standard error.

    The sequences are the independent units, their targets are not: the variance is the ratio
    estimator's, Σ (S_n − m·N_n)² / (Σ N_n)² · n / (n − 1), with S_n the sum and N_n the count of
    sequence n. NaN without targets or with fewer than 2 sequences.
    """
    sums, counts = sums.double(), counts.double()
    n = sums.shape[dim]
    shape = [1] * sums.ndim
    shape[dim] = n
    counts = counts.view(shape)
    total = counts.sum()
    mean = sums.sum(dim=dim) / total
    if n < 2:
        return mean, torch.full_like(mean, float("nan"))
    residual = sums - mean.unsqueeze(dim) * counts
    variance = residual.pow(2).sum(dim=dim) / total**2 * n / (n - 1)
    return mean, variance.sqrt()
