"""ICL token-loss score against a per-sequence, per-position loop."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.adapters import from_module
from dynamics.scorers.token_loss import token_loss_score


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    )
    return from_module(GPTNeoXForCausalLM(config))


def test_matches_a_loop_over_sequences(tiny_model) -> None:
    tokens = torch.randint(0, 97, (7, 40), generator=torch.Generator().manual_seed(1))
    result = token_loss_score(tiny_model, tokens, early=3, late=30, batch_size=3)
    expected = {3: 0.0, 30: 0.0}
    for row in tokens:
        log_probs = torch.log_softmax(tiny_model.model(input_ids=row[None]).logits[0], dim=-1)  # (T, vocab)
        for pos in expected:
            expected[pos] -= float(log_probs[pos, row[pos + 1]]) / len(tokens)
    assert math.isclose(result["loss_early"], expected[3], rel_tol=1e-5)
    assert math.isclose(result["loss_late"], expected[30], rel_tol=1e-5)
    assert math.isclose(result["icl_token_loss"], expected[30] - expected[3], rel_tol=1e-4, abs_tol=1e-6)


def test_untrained_model_loses_log_vocab_at_both_positions(tiny_model) -> None:
    """Small random init gives near-uniform predictions: loss ≈ log(97) = 4.57 anywhere, so the score ≈ 0."""
    tokens = torch.randint(0, 97, (16, 40), generator=torch.Generator().manual_seed(2))
    result = token_loss_score(tiny_model, tokens, early=5, late=25)
    assert abs(result["loss_early"] - math.log(97)) < 0.2 and abs(result["loss_late"] - math.log(97)) < 0.2
    assert abs(result["icl_token_loss"]) < 0.2


@pytest.mark.parametrize(("early", "late"), [(5, 5), (10, 3), (-1, 4), (2, 39)])
def test_rejects_positions_outside_the_rows(tiny_model, early: int, late: int) -> None:
    with pytest.raises(ValueError, match="do not fit rows of 40 tokens"):
        token_loss_score(tiny_model, torch.zeros(2, 40, dtype=torch.long), early, late)
