"""Checkpoints whose scores overflow or turn NaN: the precision policy, the fp32 rescoring of an fp16
overflow, and NaN scores stored as NULL with flag 'non_finite' (never as a number) in a real warehouse."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.adapters import from_module
from dynamics.checkpoint_scorer import CheckpointScorer, ScoringConfig, TokenLossConfig
from dynamics.provenance import Provenance
from dynamics.scorers.function_vectors import EARLY_STEP, FunctionVectorConfig, choose_dtype
from dynamics.scorers.induction import InductionConfig
from dynamics.tasks.builtin import builtin_tasks
from dynamics.toy.tokenizer import train_tokenizer
from jobs.sweep.targets import ModelTarget
from tests.faults.conftest import record_figures
from warehouse import writes

TASKS = ("antonym", "capitalize")
CONFIG = ScoringConfig(
    induction=InductionConfig(repeat_len=10, n_sequences=4),
    function_vectors=FunctionVectorConfig(n_shots=3, n_clean=2, n_corrupted=2, batch_size=4),
    token_loss=TokenLossConfig(early=2, late=6),
)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"Q: {x}\nA: {y}\n\n" for task in builtin_tasks().values() for x, y in task.train + task.valid]
    return train_tokenizer(texts, vocab_size=300)


LOSS_METRICS = ("loss_early", "loss_late", "icl_token_loss")


@pytest.fixture(scope="module")
def scorer(tokenizer) -> CheckpointScorer:
    tasks = {name: task for name, task in builtin_tasks().items() if name in TASKS}
    heldout = torch.randint(1, len(tokenizer), (3, CONFIG.token_loss.late + 2), generator=torch.Generator().manual_seed(0))
    return CheckpointScorer(tokenizer, tasks, CONFIG, heldout)


def _provenance(dtype: str) -> Provenance:
    return Provenance(model="toy/nan", revision="step8", step=8, weights_sha256="0" * 64, dtype=dtype,
                      attn_implementation="eager", settings={"case": "non-finite"})


def test_precision_policy_is_fp32_on_cpu_and_for_early_steps():
    target = ModelTarget("m", "local", "/x", ("step0",), (0,))
    for step in (0, 1, EARLY_STEP, EARLY_STEP + 1, 143000, None):
        assert choose_dtype(step, "cpu") == torch.float32
        assert target.dtype_for(step, "cpu") == torch.float32
    assert choose_dtype(EARLY_STEP, "cuda") == torch.float32 and choose_dtype(None, "cuda") == torch.float32
    assert choose_dtype(EARLY_STEP + 1, "cuda") == torch.bfloat16


def test_fp16_overflow_is_rescored_in_fp32_and_every_row_is_a_number(scorer, tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, vocab_size=len(tokenizer),
                                       initializer_range=0.4))
    with torch.no_grad():  # the last MLP overflows fp16 (~1e8 > 65504); fp32 and the final norm cope
        model.transformer.h[-1].mlp.c_fc.weight.normal_(0, 30)
        model.transformer.h[-1].mlp.c_proj.weight.fill_(300)
    loaded = from_module(model.half(), attn_implementation="eager")
    loaded.dtype = torch.float16

    scored = scorer.score(loaded, _provenance("float16"))

    fv = scored.head_scores.filter(metric="fv")
    assert set(fv["dtype"]) == {"float32"}  # the FV pass fell back to fp32 ...
    assert fv.height == 8 and fv["value"].is_not_null().all() and fv["flag"].is_null().all()  # ... and is finite
    # the rows say which precision produced them: the induction probe ran in the weights' fp16
    assert set(scored.head_scores.filter(metric="induction")["dtype"]) == {"float16"} == {scored.dtype}
    assert set(scored.head_task_scores["dtype"]) == {"float32"}


@pytest.fixture(scope="module")
def nan_scored(scorer, tokenizer):
    """The scores of a model whose layer-1 attention weights are NaN."""
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                             intermediate_size=64, vocab_size=len(tokenizer), rotary_pct=0.25,
                                             max_position_embeddings=256))
    with torch.no_grad():  # layer 1's attention is NaN: its patterns, everything downstream and the loss
        model.gpt_neox.layers[1].attention.query_key_value.weight.fill_(float("nan"))
    return scorer.score(from_module(model, attn_implementation="eager"), _provenance("float32"))


def test_nan_scores_are_stored_as_null_with_flag_non_finite(nan_scored, tmp_path):
    scored = nan_scored
    heads = scored.head_scores
    induction = heads.filter(metric="induction")
    assert induction.filter(layer=0)["value"].is_not_null().all()  # layer 0 is unaffected
    bad = induction.filter(layer=1)
    assert bad.height == 4 and bad["value"].is_null().all() and (bad["flag"] == "non_finite").all()
    fv = heads.filter(metric="fv")
    assert fv["value"].is_null().all() and (fv["flag"] == "non_finite").all()
    loss = scored.checkpoint_metrics.filter(pl.col("metric").is_in(LOSS_METRICS))
    assert loss.height == 3 and loss["value"].is_null().all() and (loss["flag"] == "non_finite").all()

    warehouse = tmp_path / "w.duckdb"
    checkpoint = {"model": "toy/nan", "step": 8, "settings_hash": heads["settings_hash"][0], "revision": "step8"}
    writes.write_checkpoint(warehouse, checkpoint, heads, scored.head_task_scores, scored.checkpoint_metrics)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for table in ("head_scores", "head_task_scores", "checkpoint_metrics"):
            numbers, nulls, flagged, unflagged_nulls = con.execute(
                f"SELECT count(*) FILTER (isnan(value) OR isinf(value)), count(*) FILTER (value IS NULL), "
                f"count(*) FILTER (flag = 'non_finite'), count(*) FILTER (value IS NULL AND flag IS NULL) FROM {table}"
            ).fetchone()
            record_figures("non-finite scores", int(table == "head_scores"), wrong_rows=numbers + unflagged_nulls)
            assert numbers == 0 and nulls == flagged > 0 and unflagged_nulls == 0, table


def test_accuracy_of_a_model_with_nan_logits_is_not_stored_as_a_number(nan_scored):
    accuracy = nan_scored.checkpoint_metrics.filter(pl.col("metric").str.starts_with("fewshot_"))
    assert accuracy.height > 0 and accuracy["value"].is_null().all() and (accuracy["flag"] == "non_finite").all()
