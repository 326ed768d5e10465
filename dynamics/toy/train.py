"""Train one toy GPT-NeoX model and save its checkpoints; score the saved checkpoints.

One function per stage, each taking everything it needs as arguments, so the suite can run a model
per process (one torch thread each) and a test can call the same code on a tiny configuration.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.adapters import load_model
from dynamics.errors import InputError
from dynamics.scorers.induction import InductionConfig, make_probe, score_induction
from dynamics.scorers.token_loss import TOKEN_LOSS_METRIC, token_loss_score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    """What a suite's data generator made once, in the parent process, for every model it trains."""

    vocab_size: int
    ordinary_ids: Tensor  # ids the induction probe draws from
    heldout: Tensor  # (rows, T): held-out rows for the ICL token-loss score, never trained on
    text_rows: Tensor | None  # (rows, T): packed story text (story data only)
    fingerprint: str  # sha256 of the generated tokens: equal configs give equal data on every machine


@dataclass(frozen=True)
class ToyModelSpec:
    """Shape of one toy model; heads × d_head = width."""

    name: str
    hidden_size: int = 64
    num_heads: int = 2
    num_layers: int = 2
    rotary_fraction: float = 0.25  # Pythia's; each head's rotary dims must be a whole, even number

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise InputError(f"{self.name}: hidden_size {self.hidden_size} is not divisible by {self.num_heads} heads")
        rotary = self.hidden_size // self.num_heads * self.rotary_fraction
        if rotary != int(rotary) or int(rotary) % 2 or rotary < 2:
            raise InputError(f"{self.name}: {self.rotary_fraction:g} of a {self.hidden_size // self.num_heads}-dim head "
                             "is not a whole, even number of rotary dims (rotary dims rotate in pairs)")

    def hf_config(self, vocab_size: int, context_length: int) -> GPTNeoXConfig:
        """Pythia's architecture at toy scale: parallel residual, partial rotary, untied unembedding."""
        return GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=4 * self.hidden_size,
            max_position_embeddings=context_length,
            use_parallel_residual=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "partial_rotary_factor": self.rotary_fraction},
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=1,
            tie_word_embeddings=False,
            # Pythia's "small_init" rule, sqrt(2 / (5d)): transformers' fixed 0.02 is tuned for wide
            # models and at width 64 leaves q·k so small that training sits on a long plateau
            initializer_range=math.sqrt(2 / (5 * self.hidden_size)),
        )


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation shared by every model of a suite: AdamW, linear warmup, then a constant rate.

    No clipping: in our width-64 runs cosine decay, weight decay 0.01 and clipping at 1.0 each delayed the
    induction jump past step 3,000 on the story data (docs/methods.md, "The toy suites").
    """

    steps: tuple[int, ...]  # checkpoint steps, sorted; the last is the training length
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.warmup_steps < 1:
            raise InputError(f"warmup_steps must be at least 1 (got {self.warmup_steps})")
        if self.weight_decay < 0:
            raise InputError(f"weight_decay must be at least 0 (got {self.weight_decay})")

    @property
    def total_steps(self) -> int:
        return self.steps[-1]

    def learning_rate_at(self, step: int) -> float:
        return self.learning_rate * min(1.0, (step + 1) / self.warmup_steps)


def train_model(
    spec: ToyModelSpec,
    settings: TrainSettings,
    seed: int,
    batches: Callable[[int], Tensor],
    vocab_size: int,
    context_length: int,
    model_dir: Path,
    bar_position: int = 0,
) -> None:
    """Train `spec` from `seed` on `batches(step)` and write `model_dir/step<N>/` for every step in settings."""
    torch.manual_seed(seed)
    device = torch.device(settings.device)
    model = GPTNeoXForCausalLM(spec.hf_config(vocab_size, context_length)).to(device)
    model.train()
    matrices = [p for p in model.parameters() if p.ndim >= 2]  # weight decay on matrices only, as usual
    others = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": settings.weight_decay},
                                   {"params": others, "weight_decay": 0.0}],
                                  lr=settings.learning_rate, betas=(0.9, 0.95))
    save_at = set(settings.steps)
    for step in tqdm(range(settings.total_steps + 1), desc=spec.name, position=bar_position, leave=True):
        if step in save_at:
            model.save_pretrained(model_dir / f"step{step}")
        if step == settings.total_steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate_at(step)
        batch = batches(step).to(device)  # (batch, T)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    log.info("trained %s for %d steps; last loss %.3f", spec.name, settings.total_steps, loss.item())


@dataclass(frozen=True)
class ProbeSettings:
    """How the suite summarises each checkpoint (the table `dynamics toy` prints)."""

    induction: InductionConfig = InductionConfig(n_sequences=200)
    early: int = 10  # token-loss positions; the reference's 50 and 500 do not fit a 128-token context
    late: int = 120


def score_checkpoints(
    model_dir: Path, steps: tuple[int, ...], ordinary_ids: Tensor, heldout: Tensor, probe: ProbeSettings, device: str
) -> list[dict]:
    """Per step: best head's induction / prev-token score and the token-loss score on held-out rows."""
    loaded = load_model(model_dir / f"step{steps[0]}", device=device, attn_implementation="eager")
    tokens = make_probe(ordinary_ids, loaded.config.bos_token_id, probe.induction)  # (n, 1 + 2r)
    results = []
    for step in steps:
        loaded.load_weights(model_dir / f"step{step}")
        scores = score_induction(loaded, tokens, probe.induction)
        losses = token_loss_score(loaded, heldout, probe.early, probe.late)
        results.append({
            "step": step,
            "induction_best": float(scores.values["induction"].max()),
            "prev_token_best": float(scores.values["prev_token"].max()),
            **{key: losses[key] for key in ("loss_early", "loss_late", TOKEN_LOSS_METRIC)},
        })
    return results
