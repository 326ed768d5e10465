"""FV execution and the per-checkpoint ICL experiment entry point, on the hand-built carrier model."""

from __future__ import annotations

import pytest
import torch

from dynamics.adapters import hooks
from dynamics.experiments.ablations import AblationConfig
from dynamics.experiments.few_shot import IclEvalConfig, build_eval_prompts
from dynamics.experiments.function_vector_execution import (
    FunctionVectorExecutionConfig,
    add_at_last_position,
    build_function_vector,
    execute_function_vectors,
    function_vector_heads,
    injection_layer,
    random_function_vector_heads,
)
from dynamics.experiments.runner import IclExperimentConfig, build_icl_inputs, run_icl_experiments
from dynamics.provenance import Provenance
from dynamics.scorers.function_vectors import mean_head_activations
from dynamics.tasks.prompts import padded_batch
from tests.dynamics.icl_models import CARRIER, N_HEADS, N_LAYERS, carrier_model, yes_no_tasks, yes_no_tokenizer

EVAL = IclEvalConfig(n_shots=4, n_queries=6)


@pytest.fixture(scope="module")
def tokenizer():
    return yes_no_tokenizer()


def test_head_counts_and_random_heads() -> None:
    assert len(function_vector_heads(torch.rand(12, 12), 0.02)) == 3  # ⌈2.88⌉
    assert len(function_vector_heads(torch.rand(6, 8), 0.02)) == 1  # ⌈max(1, 0.96)⌉
    scores = torch.zeros(3, 4)
    scores[2, 1], scores[0, 3] = 2, 1
    assert function_vector_heads(scores, 0.2) == [(2, 1), (0, 3), (0, 0)]  # ⌈2.4⌉, ties in layer-major order
    assert random_function_vector_heads(12, 12, 0.02, 42) == random_function_vector_heads(12, 12, 0.02, 42)
    assert random_function_vector_heads(12, 12, 0.02, 42) != random_function_vector_heads(12, 12, 0.02, 43)
    with pytest.raises(ValueError, match="head_fraction must be in"):
        FunctionVectorExecutionConfig(head_fraction=0)


def test_function_vector_counts_the_output_bias_once_per_head(tokenizer) -> None:
    model = carrier_model(tokenizer, attention_bias=True)
    means = torch.randn(N_LAYERS, N_HEADS, model.d_head)
    heads = [(1, 0), (1, 3), (0, 2)]
    expected = torch.zeros(model.d_model)
    for layer, head in heads:
        o_proj = model.o_proj(layer)
        expected += o_proj.weight[:, model.head_slice(head)] @ means[layer, head] + o_proj.bias
    torch.testing.assert_close(build_function_vector(model, heads, means), expected, atol=1e-5, rtol=0)
    assert float(model.o_proj(1).bias.abs().sum()) > 0  # the bias term is really there


def test_vector_is_added_to_the_block_output_at_each_rows_last_position(tokenizer) -> None:
    model = carrier_model(tokenizer)
    prompts = build_eval_prompts(yes_no_tasks(), tokenizer, EVAL)
    encoded = [p for t in prompts.few_shot.tasks for p in t.clean][:4] + list(prompts.zero_shot[0][:2])
    ids, lengths = padded_batch(encoded)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    layer = injection_layer(model)
    vector = torch.randn(model.d_model)
    seen = []
    with hooks([model.blocks[layer + 1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))]):
        with torch.no_grad():
            model.model(input_ids=ids, attention_mask=mask)
            with add_at_last_position(model, layer, vector)(lengths - 1):
                model.model(input_ids=ids, attention_mask=mask)
    expected = seen[0].clone()
    expected[torch.arange(len(encoded)), lengths - 1] += vector
    torch.testing.assert_close(seen[1], expected)


def test_the_carrier_heads_vector_restores_the_task_zero_shot(tokenizer) -> None:
    model = carrier_model(tokenizer)
    yes_only = build_eval_prompts({"yes": yes_no_tasks()["yes"]}, tokenizer, EVAL)
    means = mean_head_activations(model, yes_only.few_shot)[0]  # (layer, head, d_head)
    fv_scores = torch.zeros(N_LAYERS, N_HEADS)
    fv_scores[CARRIER] = 1
    config = FunctionVectorExecutionConfig(seed=42)
    assert CARRIER not in random_function_vector_heads(N_LAYERS, N_HEADS, 0.02, 42)
    metrics = execute_function_vectors(model, yes_only, fv_scores, means, None, config)
    assert metrics == {
        "fv_exec_n_queries": 6.0,
        "fv_exec_zero_shot": 0.0,  # no labels in the prompt: the model says ' no'
        "fv_exec_zero_shot_fv": 1.0,
        "fv_exec_zero_shot_random_fv": 0.0,
        "fv_exec_shuffled": 1.0,  # every label is ' yes': shuffling them changes nothing
        "fv_exec_shuffled_fv": 1.0,
        "fv_exec_shuffled_random_fv": 1.0,
    }
    # the filter keeps only queries the clean prompt answers right
    none_right = {"yes": torch.zeros(6)}
    filtered = execute_function_vectors(model, yes_only, fv_scores, means, none_right, config)
    assert filtered["fv_exec_n_queries"] == 0 and filtered["fv_exec_zero_shot"] != filtered["fv_exec_zero_shot"]  # NaN


def test_run_icl_experiments_returns_ablation_rows_and_checkpoint_metrics(tokenizer) -> None:
    model = carrier_model(tokenizer)
    config = IclExperimentConfig(evaluation=EVAL, ablation=AblationConfig(fractions=(0.1,)), means_from="evaluation_prompts")
    inputs = build_icl_inputs(yes_no_tasks(), tokenizer, config, n_ctx=model.n_ctx)
    scores = {"induction": torch.zeros(N_LAYERS, N_HEADS), "fv": torch.zeros(N_LAYERS, N_HEADS)}
    scores["fv"][CARRIER] = 1
    settings = config.settings(inputs)
    assert settings["prompts"]["prompts_sha256"] == inputs.prompts.few_shot.content_hash
    provenance = Provenance("m", "step3", 3, "sha", "float32", "sdpa", settings)
    result = run_icl_experiments(model, inputs, scores, None, provenance, config)

    metrics = dict(zip(result.checkpoint_metrics["metric"], result.checkpoint_metrics["value"]))
    assert metrics["fewshot_f1"] == metrics["fewshot_top1"] == 1.0
    assert metrics["fv_exec_n_queries"] == 12 and metrics["fv_exec_shuffled"] == 1.0
    assert set(result.checkpoint_metrics["settings_hash"]) == {provenance.settings_hash}
    fv_ablated = result.ablations.filter((result.ablations["ranking"] == "fv") & (result.ablations["fraction"] == 0.1)
                                         & (result.ablations["metric"] == "top1"))
    assert set(fv_ablated["heads"]) == {"[[1, 2]]"} and fv_ablated["value"].mean() == 0.5
    with pytest.raises(ValueError, match="means_from='fv_prompts' but means were not given"):
        run_icl_experiments(model, inputs, scores, None, provenance, IclExperimentConfig(evaluation=EVAL))
