"""Head ablations: the reference's head choice and edge cases, ablation semantics, and the grid's rows."""

from __future__ import annotations

import json
import random

import duckdb
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.adapters import LoadedModel, from_module, hooks
from dynamics.experiments.ablations import (
    AblationConfig,
    HeldoutTokens,
    all_position_ablation,
    last_position_ablation,
    plan_ablations,
    qualifying_heads,
    random_head_scores,
    run_ablation_grid,
    select_heads,
)
from dynamics.experiments.few_shot import IclEvalConfig, build_eval_prompts, evaluate_few_shot
from dynamics.provenance import Provenance
from dynamics.scorers.function_vectors import mean_head_activations
from dynamics.scorers.token_loss import token_loss_score
from dynamics.tasks.prompts import padded_batch
from tests.dynamics.icl_models import CARRIER, N_HEADS, N_LAYERS, carrier_model, yes_no_tasks, yes_no_tokenizer
from warehouse.db import schema_sql

EVAL = IclEvalConfig(n_shots=4, n_queries=6)
ALL_HEADS = [(layer, head) for layer in range(N_LAYERS) for head in range(N_HEADS)]


# --- head choice ------------------------------------------------------------------------------------


def _reference_ranking(scores: torch.Tensor) -> list[tuple[int, int]]:
    """get_heads_to_ablate's ranking: a {"l.h": score} dict sorted by value, descending."""
    as_dict = {f"{l}.{h}": float(scores[l, h]) for l in range(scores.shape[0]) for h in range(scores.shape[1])}
    ranked = sorted(as_dict.items(), key=lambda item: item[1], reverse=True)
    return [tuple(int(part) for part in key.split(".")) for key, _ in ranked]


def test_head_counts_follow_the_reference_rule() -> None:
    scores = {"induction": torch.rand(12, 12), "fv": torch.rand(12, 12)}  # 144 heads
    assert select_heads(scores, "induction", 0, False) == []
    assert len(select_heads(scores, "induction", 0.001, False)) == 1  # ⌊0.144⌋ = 0 → at least 1
    assert len(select_heads(scores, "induction", 0.2, False)) == 28  # ⌊28.8⌋
    assert len(select_heads(scores, "fv", 0.07, False)) == 10  # ⌊10.08⌋
    assert len(select_heads(scores, "fv", 3, False)) == 3  # ≥ 1: a head count
    assert select_heads(scores, "induction", 0.2, False) == _reference_ranking(scores["induction"])[:28]
    with pytest.raises(ValueError, match="ranking 'attention' is not one of"):
        select_heads(scores, "attention", 0.1, False)
    with pytest.raises(ValueError, match="needs the 'fv' head score"):
        select_heads({"induction": scores["induction"]}, "induction", 0.1, True)


def test_ties_keep_layer_major_order() -> None:
    scores = torch.zeros(2, 3)
    scores[1, 0] = 1
    assert select_heads({"induction": scores}, "induction", 4, False) == [(1, 0), (0, 0), (0, 1), (0, 2)]


def test_random_ranking_is_the_seeded_python_draw() -> None:
    rng = random.Random(42)
    draws = torch.tensor([[rng.random() for _ in range(8)] for _ in range(6)], dtype=torch.float64)
    torch.testing.assert_close(random_head_scores(6, 8, seed=42), draws)
    scores = {"induction": torch.rand(6, 8)}
    assert select_heads(scores, "random", 5, False) == _reference_ranking(draws)[:5]
    assert select_heads(scores, "random", 5, False, seed=1) != select_heads(scores, "random", 5, False)


def test_exclusion_edge_cases() -> None:
    torch.manual_seed(0)
    # 48 heads (pythia-70m): ⌊0.02·48⌋ = 0, exclusion removes nothing
    small = {"induction": torch.rand(6, 8), "fv": torch.rand(6, 8)}
    for ranking in ("induction", "fv", "random"):
        assert select_heads(small, ranking, 0.2, True) == select_heads(small, ranking, 0.2, False)

    # 144 heads (pythia-160m): ⌊2.88⌋ = 2 heads of the other score are removed first
    big = {"induction": torch.rand(12, 12), "fv": torch.rand(12, 12)}
    top_fv = _reference_ranking(big["fv"])[:2]
    top_induction = _reference_ranking(big["induction"])[:2]
    big["induction"][top_fv[0]] = 5.0  # the top FV head is also the top induction head
    expected = [h for h in _reference_ranking(big["induction"]) if h not in top_fv][:10]
    assert select_heads(big, "induction", 10, True) == expected
    assert top_fv[0] in select_heads(big, "induction", 10, False)
    fv_excl = select_heads(big, "fv", 10, True)
    top_induction = _reference_ranking(big["induction"])[:2]
    assert fv_excl == [h for h in _reference_ranking(big["fv"]) if h not in top_induction][:10]
    # random with exclusion spares the top *induction* heads, not the FV heads
    random_all = select_heads(big, "random", 144, False)
    random_excl = select_heads(big, "random", 144, True)
    assert random_excl == [h for h in random_all if h not in top_induction]
    assert len(random_excl) == 142


# --- ablation semantics -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return yes_no_tokenizer()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return build_eval_prompts(yes_no_tasks(), tokenizer, EVAL)


@pytest.fixture(scope="module")
def model(tokenizer) -> LoadedModel:
    return carrier_model(tokenizer)


def _accuracy(model, prompts, heads, values) -> dict[str, dict[str, float]]:
    return evaluate_few_shot(model, prompts, EVAL, last_position_ablation(model, heads, values)).task_means()


def test_only_the_carrier_head_matters(model, prompts) -> None:
    means = torch.randn(N_LAYERS, N_HEADS, model.d_head)
    means[CARRIER] = 0  # a zero mean for the carrier: mean ablation removes its signal
    for values in (torch.zeros_like(means), means):
        carrier = _accuracy(model, prompts, [CARRIER], values)
        # chance: the model answers ' no' to everything, right on one task of two
        assert carrier == {"yes": {"f1": 0.0, "top1": 0.0}, "no": {"f1": 1.0, "top1": 1.0}}
        for head in ALL_HEADS:
            if head != CARRIER:
                assert _accuracy(model, prompts, [head], values) == {
                    "yes": {"f1": 1.0, "top1": 1.0}, "no": {"f1": 1.0, "top1": 1.0}}, head
        others = [h for h in ALL_HEADS if h != CARRIER]
        assert evaluate_few_shot(model, prompts, EVAL, last_position_ablation(model, others, values)).model_means() == {
            "f1": 1.0, "top1": 1.0}


def test_mean_ablation_differs_from_zero_ablation_unless_the_mean_is_zero(model, prompts, tokenizer) -> None:
    provenance = Provenance("m", "step1", 1, "sha", "float32", "sdpa", {})
    scores = {"induction": torch.zeros(N_LAYERS, N_HEADS), "fv": torch.zeros(N_LAYERS, N_HEADS)}
    scores["induction"][CARRIER] = 1
    config = AblationConfig(fractions=(0.1,), rankings=("induction",), exclusions=(False,))
    yes_only = build_eval_prompts({"yes": yes_no_tasks()["yes"]}, tokenizer, EVAL)
    yes_mean = mean_head_activations(model, yes_only.few_shot)  # (1, layer, head, d_head): a positive label signal
    assert float(yes_mean[0, CARRIER[0], CARRIER[1], 0]) > 0

    def f1_by_method(means: torch.Tensor) -> dict[str, dict[str, float]]:
        rows = run_ablation_grid(model, prompts, scores, means, provenance, config, EVAL)
        ablated = rows.filter((rows["fraction"] == 0.1) & (rows["metric"] == "f1"))
        return {m: dict(zip(g["task"], g["value"])) for (m,), g in ablated.group_by("method")}

    # μ^τ of two tasks that cancel: the cross-task mean is zero and both methods agree
    cancelling = torch.cat([yes_mean, -yes_mean])
    result = f1_by_method(cancelling)
    assert result["mean"] == result["zero"] == {"yes": 0.0, "no": 1.0}
    # the yes-task mean pushes every answer to ' yes'; zeros push it to ' no'
    result = f1_by_method(torch.cat([yes_mean, yes_mean]))
    assert result["mean"] == {"yes": 1.0, "no": 0.0} and result["zero"] == {"yes": 0.0, "no": 1.0}


def test_last_position_ablation_changes_only_the_last_position_by_the_head_write(tokenizer, prompts) -> None:
    model = carrier_model(tokenizer, attention_bias=True)
    encoded = [p for t in prompts.few_shot.tasks for p in t.clean][:5]
    ids, lengths = padded_batch(encoded)
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    layer, head = 0, 1
    captured = {}

    def capture(key):
        def hook(_module, args, output):
            captured[key] = (args[0].detach().clone(), output.detach().clone())
        return hook

    values = torch.randn(N_LAYERS, N_HEADS, model.d_head)
    for key, intervention in (("clean", None), ("ablated", last_position_ablation(model, [(layer, head)], values))):
        with hooks([model.o_proj(layer).register_forward_hook(capture(key))]), torch.no_grad():
            context = intervention(lengths - 1) if intervention else hooks([])
            with context:
                model.model(input_ids=ids, attention_mask=mask)
    z, clean_out = captured["clean"]
    _, ablated_out = captured["ablated"]
    rows = torch.arange(len(encoded))
    expected = clean_out.clone()
    weight = model.o_proj_weight(layer)[:, model.head_slice(head)]  # (d_model, d_head)
    z_head = z[rows, lengths - 1, model.head_slice(head)]  # (batch, d_head)
    expected[rows, lengths - 1] += (values[layer, head] - z_head) @ weight.T  # the bias stays in
    torch.testing.assert_close(ablated_out, expected, atol=1e-5, rtol=0)
    assert (ablated_out != clean_out).any()


def test_token_loss_ablation_equals_the_reference_value_hook() -> None:
    """Writing the BOS value vector into every position (the reference's fallback) ≡ z_h[t] := z_h[0]."""
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, rotary_pct=0.25, initializer_range=0.4)
    model = from_module(GPTNeoXForCausalLM(config), attn_implementation="sdpa")
    tokens = torch.randint(1, 50, (6, 40))
    tokens[:, 0] = 0  # BOS first, as held-out rows are
    heads = [(0, 1), (1, 3), (1, 0)]
    d_head = model.d_head

    def value_hook(layer_heads, method):
        def hook(_module, _args, qkv):
            qkv = qkv.clone()
            view = qkv.view(*qkv.shape[:2], model.n_heads, 3 * d_head)  # per head: q, k, v (GPT-NeoX layout)
            for head in layer_heads:
                v = view[:, :, head, 2 * d_head :]
                v[:] = v[:, :1] if method == "mean" else 0
            return qkv
        return hook

    clean = token_loss_score(model, tokens, 5, 30)
    for method in ("mean", "zero"):
        with all_position_ablation(model, heads, method):
            ours = token_loss_score(model, tokens, 5, 30)
        by_layer = {l: [h for hl, h in heads if hl == l] for l in {l for l, _ in heads}}
        handles = [model.blocks[l].attention.query_key_value.register_forward_hook(value_hook(hs, method))
                   for l, hs in by_layer.items()]
        with hooks(handles):
            reference = token_loss_score(model, tokens, 5, 30)
        for metric in ("loss_early", "loss_late", "icl_token_loss"):
            assert ours[metric] == pytest.approx(reference[metric], abs=1e-5)
        assert abs(ours["loss_late"] - clean["loss_late"]) > 1e-3  # the ablation does something


# --- the grid ------------------------------------------------------------------------------------------


def test_grid_rows_fit_the_warehouse_and_reuse_identical_head_sets(model, prompts) -> None:
    torch.manual_seed(0)
    scores = {"induction": torch.rand(N_LAYERS, N_HEADS), "fv": torch.rand(N_LAYERS, N_HEADS)}
    scores["induction"][CARRIER] = 2  # the carrier is the top induction head
    scores["fv"][0, 1], scores["fv"][CARRIER] = 2, 1.5  # another head tops FV; the carrier is second
    means = torch.zeros(2, N_LAYERS, N_HEADS, model.d_head)
    heldout = HeldoutTokens(torch.cat([torch.zeros(3, 1, dtype=torch.long), torch.randint(3, 300, (3, 30))], 1), 3, 20)
    provenance = Provenance("toy/m", "step7", 7, "sha", "float32", "sdpa", {"a": 1})
    config = AblationConfig(fractions=(0.01, 0.2, 2.0))
    rows = run_ablation_grid(model, prompts, scores, means, provenance, config, EVAL, heldout)

    # every cell: 3 rankings × (clean + 2 exclusions × 3 fractions) × 2 methods; 2 tasks × 2 metrics + 3 token-loss
    assert rows.height == 3 * (1 + 2 * 3) * 2 * (2 * 2 + 3)
    con = duckdb.connect()
    for statement in schema_sql():
        con.execute(statement)
    con.execute("INSERT INTO ablations BY NAME SELECT * FROM rows")
    assert con.execute("SELECT count(*) FROM ablations").fetchone()[0] == rows.height  # primary key: no duplicates

    def f1(ranking, fraction, exclusion=False, method="mean"):
        cell = rows.filter((rows["ranking"] == ranking) & (rows["fraction"] == fraction) & (rows["exclusion"] == exclusion)
                           & (rows["method"] == method) & (rows["metric"] == "f1"))
        return float(cell["value"].mean()), json.loads(cell["heads"][0]), int(cell["n_ablated"][0])

    assert f1("induction", 0.0) == (1.0, [], 0)
    assert f1("induction", 0.01) == (0.5, [list(CARRIER)], 1)  # 8 heads: ⌊0.08⌋ → 1
    assert f1("induction", 0.2, exclusion=True, method="zero") == (0.5, [list(CARRIER)], 1)  # ⌊0.16⌋ = 0 excluded
    assert f1("fv", 0.01) == (1.0, [[0, 1]], 1)
    assert f1("fv", 2.0)[1:] == ([[0, 1], list(CARRIER)], 2)
    assert f1("fv", 2.0)[0] == 0.5
    token_rows = rows.filter(rows["task"] == "heldout")
    assert set(token_rows["metric"]) == {"icl_token_loss", "loss_early", "loss_late"}
    assert token_rows.filter(token_rows["fraction"] == 0)["value"].n_unique() == 3  # clean run: one value per metric

    cells = plan_ablations(scores, config)
    distinct = {(c.heads, m if c.heads else "") for c in cells for m in config.methods}
    assert len(cells) == 3 * 7 and len(distinct) < len(cells)  # identical head sets are evaluated once


def test_grid_refuses_means_of_another_model(model, prompts) -> None:
    provenance = Provenance("m", "step1", 1, "sha", "float32", "sdpa", {})
    scores = {"induction": torch.rand(N_LAYERS, N_HEADS), "fv": torch.rand(N_LAYERS, N_HEADS)}
    with pytest.raises(ValueError, match=r"means has shape \(3, 2, 4, 8\); expected \(task, 2, 4, 4\)"):
        run_ablation_grid(model, prompts, scores, torch.zeros(3, 2, 4, 8), provenance, AblationConfig(), EVAL)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="fractions must be distinct and > 0.*methods must be a non-empty subset"):
        AblationConfig(fractions=(0.0, 0.1), methods=("resample",))
    settings = AblationConfig().settings()
    assert settings["fractions"] == (0.01, 0.03, 0.05, 0.07, 0.09, 0.15, 0.2)
    assert settings["token_loss_ablation"]["mean"] == "bos_output_all_positions"


def test_rankings_take_only_heads_that_qualify() -> None:
    """With standard errors, a ranking may only ablate heads that are heads of its kind (floor and z)."""
    scores = {"induction": torch.tensor([[0.5, 0.3], [0.1, 0.05]]), "fv": torch.tensor([[0.002, 0.2], [0.05, 0.0005]])}
    stderr = {"induction": torch.full((2, 2), 0.01), "fv": torch.tensor([[0.0001, 0.1], [0.001, 0.0001]])}
    config = AblationConfig(fractions=(1.0, 3.0), rankings=("induction", "fv"), exclude_fraction=1)
    cells = {(c.ranking, c.fraction, c.exclusion): c.heads for c in plan_ablations(scores, config, stderr)}
    # FV: (0, 1) scores 0.2 but only 2 standard errors; (1, 1) is below the 0.001 floor
    assert cells[("fv", 1.0, False)] == ((1, 0),)
    assert cells[("fv", 3.0, False)] == ((1, 0), (0, 0))  # fewer heads than asked for: only two qualify
    assert cells[("fv", 3.0, True)] == ((1, 0),)  # the top qualifying induction head (0, 0) kept out
    assert cells[("induction", 3.0, False)] == ((0, 0), (0, 1))  # 0.1 and 0.05 are below the 0.25 floor
    assert plan_ablations(scores, config)[-1].heads == ((0, 1), (1, 0), (1, 1))  # without stderr: every head ranks


@pytest.mark.parametrize("z", [0.0, 3.0])
def test_qualifying_heads_follow_the_documented_rule_head_by_head(z):
    """At least the floor and more than z standard errors above zero; a head without a standard error passes only
    when no test is asked for (z = 0), as in the warehouse's views."""
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.01], [0.2, -0.3, 0.4, 0.5]])
    stderr = torch.tensor([[0.1, 0.2, float("nan"), 0.001], [0.01, 0.01, 0.2, 0.0]])
    expected = set()
    for layer in range(2):
        for head in range(4):
            score, se = float(scores[layer, head]), float(stderr[layer, head])
            known = se == se
            if score >= 0.05 and (known or z == 0) and score > z * (se if known else 0.0):
                expected.add((layer, head))
    assert qualifying_heads(scores, stderr, floor=0.05, z=z) == expected
    assert ((0, 2) in expected) == (z == 0)  # the case the two definitions once disagreed on
