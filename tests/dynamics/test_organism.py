"""The organism in miniature: real training grows induction heads, then a function-vector head.

A scaled-down default preset (dynamics/toy/suite.py): one 3-layer width-64 model, a 32-token context,
batches of 16, and 4 bijection tasks over 16 words with 15 % label noise, 1,500 steps, so that it trains
in about 20 s on one thread. See `organism_config` for what was tried and measured.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dynamics.adapters import LoadedModel, load_model
from dynamics.experiments.few_shot import IclEvalConfig, build_eval_prompts, first_token_correct
from dynamics.scorers.function_vectors import (
    FunctionVectorConfig,
    FunctionVectorScores,
    build_function_vector_prompts,
    score_function_vector_heads,
)
from dynamics.scorers.induction import InductionConfig
from dynamics.tasks.synthetic import BijectionTasks
from dynamics.toy.episodes import EpisodeData
from dynamics.toy.suite import ToyScoring, ToySuiteConfig, read_manifest, train_suite
from dynamics.toy.train import ProbeSettings, ToyModelSpec, TrainSettings

MODEL = "org-64d-2h"
SWITCH_STEP = 500
TOTAL_STEPS = 1500
FV_FLOOR = 0.05  # the top FV head's indirect effect; every head scores ≤ 0.01 before the episodes start
FUNCTION_VECTORS = FunctionVectorConfig(n_shots=6, n_clean=64, n_corrupted=64)


def organism_config() -> ToySuiteConfig:
    """The smallest mix we found that grows a significant FV head in about 20 s of training.

    Measured (top head at step 1,500, FV ± stderr over these 64 + 64 prompts): seed 0 (this test's)
    0.117 ± 0.018, seed 1 0.081 ± 0.016, seed 2 0.030 ± 0.025, not significant (its head is there, 0.147 ±
    0.035 over another 32 + 32 prompts, but weaker and noisier): the test pins seed 0 rather than claim
    every seed. With 30 % label noise (the full preset's) the same 1,500 steps gave
    0.026 ± 0.011 or less; with none, FV heads formed and faded (0.122 ± 0.037 at step 1,000, 0.045 ± 0.035
    at 1,500); a 64-token context or a quarter of rotary dimensions grew no induction head by 2,500 steps.
    """
    return ToySuiteConfig(
        models=(ToyModelSpec(MODEL, 64, 2, 3, rotary_fraction=0.5),),
        train=TrainSettings(steps=tuple(range(0, TOTAL_STEPS + 1, 250)), warmup_steps=100),
        data=EpisodeData(tasks=BijectionTasks(n_tasks=4, n_words=16, n_demo_inputs=8), n_fillers=32,
                         context_length=32, batch_size=16, max_span=12, max_shots=7, label_noise=0.15,
                         switch_step=SWITCH_STEP, n_heldout_rows=64),
        probe=ProbeSettings(induction=InductionConfig(repeat_len=15, n_sequences=100), early=5, late=28),
        scoring=ToyScoring(shots=6, icl_queries=8, repeat_len=15),
    )


@pytest.fixture(scope="module")
def organism(tmp_path_factory) -> Path:
    return train_suite(organism_config(), out=tmp_path_factory.mktemp("suites") / "organism")


def load_step(suite: Path, step: int) -> LoadedModel:
    return load_model(suite / MODEL / f"step{step}", attn_implementation="eager")


def function_vector_scores(suite: Path, step: int) -> FunctionVectorScores:
    data = organism_config().data
    prompts = build_function_vector_prompts(data.tasks.tasks(), data.tokenizer(), FUNCTION_VECTORS)
    return score_function_vector_heads(load_step(suite, step), prompts, FUNCTION_VECTORS)


def test_induction_heads_form_on_spans_before_the_episodes(organism: Path) -> None:
    rows = read_manifest(organism)["checkpoint_scores"][MODEL]
    induction = {row["step"]: row["induction_best"] for row in rows}
    assert induction[0] < 0.05, induction
    assert induction[SWITCH_STEP] > 0.2, induction
    assert min(v for step, v in induction.items() if step >= SWITCH_STEP) > 0.2, induction


def test_a_function_vector_head_forms_on_the_episodes(organism: Path) -> None:
    before = function_vector_scores(organism, SWITCH_STEP)
    after = function_vector_scores(organism, TOTAL_STEPS)
    assert before.fv.max() < 0.01
    top = after.fv.argmax()
    fv, stderr = after.fv.flatten()[top], after.stderr.flatten()[top]
    assert fv >= FV_FLOOR and fv > 3 * stderr, (fv, stderr)


def test_few_shot_answers_beat_chance_and_shuffled_labels(organism: Path) -> None:
    data = organism_config().data
    prompts = build_eval_prompts(data.tasks.tasks(), data.tokenizer(), IclEvalConfig(n_shots=6, n_queries=8))
    model = load_step(organism, TOTAL_STEPS)
    clean = torch.cat(first_token_correct(model, [t.clean for t in prompts.few_shot.tasks], 32)).mean()
    shuffled = torch.cat(first_token_correct(model, [t.corrupted for t in prompts.few_shot.tasks], 32)).mean()
    assert clean > 0.8 and clean > shuffled + 0.3, (clean, shuffled)
