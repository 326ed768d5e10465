"""Induction-probe scores: closed forms on a hand-built GPT-2, batched against a per-sequence loop, both probes."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from dynamics.adapters import LoadedModel, from_module
from dynamics.scorers.estimates import HeadScores
from dynamics.scorers.induction import (
    METRICS,
    InductionConfig,
    make_probe,
    make_reference_probe,
    score_induction,
)
from dynamics.toy.tokenizer import BOS_TEXT, train_tokenizer
from tests.dynamics.attention_probe import returns_attention_weights
from tests.dynamics.families import LLAMA_LAYOUT_FAMILIES, tiny_llama_layout_model

REPEAT = 50  # the reference's r length, so the closed forms of docs/methods.md, "Pattern score formula" apply as written
T = 1 + 2 * REPEAT


# ---------------------------------------------------------------- a hand-built GPT-2 with known heads

def _rotation(offset: int, theta: Tensor) -> Tensor:
    """(16, 16) map x ↦ x @ W turning the (cos pθ, sin pθ) code of position p into that of p − offset."""
    F = len(theta)
    cos, sin = torch.cos(offset * theta), torch.sin(offset * theta)
    weight = torch.zeros(2 * F, 2 * F)
    k = torch.arange(F)
    weight[k, k], weight[k + F, k] = cos, sin
    weight[k + F, k + F], weight[k, k + F] = cos, -sin
    return weight


def hand_built_gpt2(vocab_size: int = 64, sharpness: float = 10.0) -> GPT2LMHeadModel:
    """Layer 0 has four hand-set heads; layer 1 keeps its random weights.

    The residual is zero-mean with constant norm at every position, so ln_1 only rescales:
    dims 0–15 hold a position code (cos, sin of p·2π·2^k/256, k < 8), dims 16–31 its negation,
    dims 32–47 a unit-norm token vector, dims 48–63 its negation. Query·key = s·Σ_k cos((i − o − j)θ_k),
    maximal only at j = i − o (the next best sum is 5 of 8), so a head attends almost one-hot to i − o.
    Head 0: o = 1 (previous token), no output. Head 1: o = 49 (the induction target of BOS + r + r),
    copies the attended token's vector into the residual. Head 2: zero query, i.e. uniform attention,
    no output. Head 3: like head 1 with the output negated.
    """
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=128, n_embd=64, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    theta = 2 * math.pi * 2 ** torch.arange(8) / 256
    angles = torch.arange(128)[:, None] * theta[None, :]  # (pos, 8)
    code = torch.cat([angles.cos(), angles.sin()], dim=1)  # (pos, 16)
    tokens = torch.nn.functional.normalize(torch.randn(vocab_size, 16), dim=1)  # (vocab, 16)
    identity = torch.eye(16)
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        model.transformer.wpe.weight[:, 0:16], model.transformer.wpe.weight[:, 16:32] = code, -code
        model.transformer.wte.weight.zero_()  # tied: also the unembedding
        model.transformer.wte.weight[:, 32:48], model.transformer.wte.weight[:, 48:64] = tokens, -tokens
        layer = model.transformer.h[0]
        attention_in = layer.attn.c_attn.weight  # (in, q|k|v), head h at columns h·16 … h·16+15 of each block
        attention_in.zero_()
        layer.attn.c_attn.bias.zero_()
        attention_out = layer.attn.c_proj.weight  # (head·d_head in, out)
        attention_out.zero_()
        layer.attn.c_proj.bias.zero_()
        for head, offset in ((0, 1), (1, 49), (3, 49)):
            attention_in[0:16, 16 * head : 16 * head + 16] = sharpness * _rotation(offset, theta)  # query
            attention_in[0:16, 64 + 16 * head : 64 + 16 * head + 16] = identity  # key
        for head, sign in ((1, 1.0), (3, -1.0)):
            attention_in[32:48, 128 + 16 * head : 128 + 16 * head + 16] = identity  # value: token vector
            attention_out[16 * head : 16 * head + 16, 32:48] = sign * identity
        for parameter in layer.mlp.parameters():
            parameter.zero_()
    return model


def distinct_repeat_probe(n_sequences: int, vocab_size: int) -> Tensor:
    """BOS (id 0) + r + r with the 50 ids of r distinct and non-zero: no accidental duplicates."""
    generator = torch.Generator().manual_seed(1)
    rows = [torch.randperm(vocab_size - 1, generator=generator)[:REPEAT] + 1 for _ in range(n_sequences)]
    random_ids = torch.stack(rows)  # (sequence, REPEAT)
    return torch.cat([torch.zeros(n_sequences, 1, dtype=torch.long), random_ids, random_ids], dim=1)


@pytest.fixture(scope="module")
def hand_built() -> tuple[LoadedModel, Tensor, dict[str, Tensor]]:
    loaded = from_module(hand_built_gpt2(), attn_implementation="sdpa")
    probe = distinct_repeat_probe(4, loaded.vocab_size)
    scores = score_induction(loaded, probe, InductionConfig(repeat_len=REPEAT, n_sequences=4, batch_size=3))
    return loaded, probe, scores.values


def test_forced_induction_head_scores_the_closed_form(hand_built):
    loaded, probe, scores = hand_built
    with loaded.attention_implementation("eager"):
        attentions = loaded.model(input_ids=probe, output_attentions=True).attentions[0]  # (seq, head, query, key)
    rows = torch.arange(REPEAT + 1, T)
    # The closed form of docs/methods.md, "Pattern score formula", without accidental terms.
    closed_form = attentions[:, 1, rows, rows - (REPEAT - 1)].sum(dim=1).mean() / T
    torch.testing.assert_close(scores["induction"][0, 1], closed_form, atol=1e-6, rtol=0)
    assert scores["induction"][0, 1] == pytest.approx(REPEAT / T, abs=1e-5)  # attention one-hot on i − 49
    assert scores["induction"][0, 3] == pytest.approx(REPEAT / T, abs=1e-5)


def test_uniform_head_scores_the_closed_form(hand_built):
    _, _, scores = hand_built
    # Row i spreads 1/(i + 1) over keys 0..i; second-half rows have one induction and one duplicate key.
    second_half = sum(1 / (i + 1) for i in range(REPEAT + 1, T)) / T
    assert scores["induction"][0, 2] == pytest.approx(second_half, rel=1e-5)
    assert scores["duplicate_token"][0, 2] == pytest.approx(second_half, rel=1e-5)
    assert scores["prev_token"][0, 2] == pytest.approx(sum(1 / (i + 1) for i in range(1, T)) / T, rel=1e-5)


def test_previous_token_head_is_found(hand_built):
    _, _, scores = hand_built
    prev = scores["prev_token"]
    assert divmod(int(prev.argmax()), prev.shape[1]) == (0, 0)
    assert prev[0, 0] == pytest.approx((T - 1) / T, abs=1e-5)  # every row but the first attends to i − 1


def test_copying_head_is_positive_and_its_negation_negative(hand_built):
    _, _, scores = hand_built
    copying = scores["copying"][0]
    assert copying[1] > 1.0  # writes the attended token's own unembedding direction
    torch.testing.assert_close(copying[3], -copying[1])
    assert copying[0] == 0 and copying[2] == 0  # no output at all


# ---------------------------------------------------------------- random models of each family

def random_model(family: str, vocab_size: int = 40, n_positions: int = 64) -> LoadedModel:
    """Two layers, four heads, weights large enough that attention is far from uniform."""
    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, initializer_range=0.3)
    if family == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=n_positions, **common,
        ))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=n_positions, **common))
    elif family in LLAMA_LAYOUT_FAMILIES:
        model = tiny_llama_layout_model(family, n_layers=2, n_heads=4, d_model=32, n_positions=n_positions, **common)
    else:
        model = LlamaForCausalLM(LlamaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=n_positions, **common,
        ))
    with torch.no_grad():  # norm gains and biases away from their 1 / 0 init, so leaving one out shows
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return from_module(model, attn_implementation="sdpa")


def _norm_linear_map(norm: nn.Module, hidden: Tensor) -> Callable:
    """o ↦ γ ⊙ P(o) / σ, with σ read off the norm module's own output for `hidden` (d_model,).

    Whether the norm centres (P) is read off its behaviour too: a LayerNorm ignores a constant shift.
    """
    centres = torch.allclose(norm(hidden + 1.0), norm(hidden), atol=1e-5)
    centre = (lambda v: v - v.mean()) if centres else (lambda v: v)
    bias = norm.bias if getattr(norm, "bias", None) is not None else 0.0
    gain = getattr(norm, "weight", None)
    gain = torch.ones_like(hidden) if gain is None else gain  # OLMo's final LayerNorm has no parameters
    sigma = (gain * centre(hidden)).norm() / (norm(hidden) - bias).norm()
    return lambda o: gain * centre(o) / sigma


def loop_scores(loaded: LoadedModel, tokens: Tensor, lengths: Tensor | None = None) -> HeadScores:
    """Straightforward reference: one sequence at a time, eager `output_attentions`, a loop over heads.

    Copying goes through the real o_proj module (one head's z kept, bias removed), the final norm's own
    output and the full lm_head logits. Standard errors by their textbook formulas: s/√n over the
    per-sequence scores, and the ratio estimator's over the per-sequence copying sums.
    """
    hf = loaded.model
    L, H, d_head = loaded.n_layers, loaded.n_heads, loaded.d_head
    norm = hf.get_submodule(loaded.family.final_norm)
    per_sequence = {m: [] for m in ("induction", "prev_token", "duplicate_token")}
    copying = []
    hf.set_attn_implementation("eager")
    for n in range(tokens.shape[0]):
        length = tokens.shape[1] if lengths is None else int(lengths[n])
        ids = tokens[n, :length].tolist()
        captured: dict[str, Tensor] = {}
        handles = [
            loaded.o_proj(l).register_forward_pre_hook(lambda _m, args, l=l, store=captured: store.__setitem__(l, args[0][0]))
            for l in range(L)
        ]
        handles.append(norm.register_forward_pre_hook(lambda _m, args, store=captured: store.__setitem__("final", args[0][0])))
        with torch.no_grad():
            attentions = hf(input_ids=torch.tensor([ids]), output_attentions=True).attentions
        for handle in handles:
            handle.remove()
        induction = {(i, j) for i in range(length) for j in range(1, i + 1) if ids[j - 1] == ids[i]}
        targets = {
            "induction": induction,
            "prev_token": {(i, i - 1) for i in range(1, length)},
            "duplicate_token": {(i, k) for i in range(length) for k in range(i) if ids[k] == ids[i]},
        }
        for metric, pairs in targets.items():
            score = torch.zeros(L, H)
            for l in range(L):
                for h in range(H):
                    A = attentions[l][0, h]
                    score[l, h] = sum(float(A[i, j]) for i, j in pairs) / float(A.sum())
            per_sequence[metric].append(score)
        with torch.no_grad():
            for i, j in sorted(induction):
                to_logit_space = _norm_linear_map(norm, captured["final"][i])
                for l in range(L):
                    o_proj = loaded.o_proj(l)
                    bias_only = o_proj(torch.zeros_like(captured[l][i]))
                    for h in range(H):
                        z = torch.zeros_like(captured[l][i])
                        z[h * d_head : (h + 1) * d_head] = captured[l][i][h * d_head : (h + 1) * d_head]
                        logits = hf.get_output_embeddings()(to_logit_space(o_proj(z) - bias_only))
                        copying.append((n, (l, h), float(logits[ids[j]] - logits.mean())))
    hf.set_attn_implementation(loaded.attn_implementation)
    n_seq = tokens.shape[0]
    result = {m: torch.stack(v).mean(dim=0) for m, v in per_sequence.items()}
    stderr = {m: torch.stack(v).double().std(dim=0, correction=1).float() / math.sqrt(n_seq) for m, v in per_sequence.items()}
    sums = torch.zeros(n_seq, L, H, dtype=torch.float64)
    counts = torch.zeros(n_seq, dtype=torch.float64)
    for n, (l, h), value in copying:
        sums[n, l, h] += value
        counts[n] += 1 / (L * H)
    mean = sums.sum(dim=0) / counts.sum()
    variance = sum((sums[n] - mean * counts[n]) ** 2 for n in range(n_seq)) / counts.sum() ** 2 * n_seq / (n_seq - 1)
    result["copying"], stderr["copying"] = mean.float(), variance.sqrt().float()
    return HeadScores(result, stderr)


def small_probe(vocab_size: int, n_sequences: int = 5, repeat_len: int = 8) -> tuple[Tensor, InductionConfig]:
    # A small id pool makes accidental duplicates (extra D entries) likely.
    config = InductionConfig(repeat_len=repeat_len, n_sequences=n_sequences, batch_size=2, seed=3)
    return make_probe(torch.arange(2, min(vocab_size, 14)), 0, config), config


@pytest.mark.parametrize("family", ["gpt_neox", "gpt2", "llama", *LLAMA_LAYOUT_FAMILIES])
def test_batched_scores_equal_the_per_sequence_loop(family):
    loaded = random_model(family)
    probe, config = small_probe(loaded.vocab_size)
    scores = score_induction(loaded, probe, config)
    expected = loop_scores(loaded, probe)
    assert set(scores.values) == set(scores.stderr) == set(METRICS)
    for metric in METRICS:
        torch.testing.assert_close(scores.values[metric], expected.values[metric], atol=1e-5, rtol=1e-4, msg=metric)
        torch.testing.assert_close(scores.stderr[metric], expected.stderr[metric], atol=1e-5, rtol=1e-4, msg=metric)
    assert scores.values["copying"].abs().max() > 1e-3  # random heads do write something
    assert scores.stderr["induction"].min() > 0 and scores.stderr["copying"].min() > 0
    assert not returns_attention_weights(loaded)  # capture restored the usual attention (sdpa)


def test_scores_do_not_depend_on_chunk_size():
    loaded = random_model("gpt_neox")
    probe, config = small_probe(loaded.vocab_size, n_sequences=7)
    by_size = [
        score_induction(loaded, probe, InductionConfig(repeat_len=8, n_sequences=7, seed=3, batch_size=size))
        for size in (1, 3, 7)
    ]
    for scores in by_size[1:]:  # values and standard errors alike
        for metric in METRICS:
            torch.testing.assert_close(scores.values[metric], by_size[0].values[metric], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(scores.stderr[metric], by_size[0].stderr[metric], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- reference-compatible probe

@pytest.fixture(scope="module")
def tokenizer():
    # Multi-byte characters give byte-level tokens that decode to U+FFFD alone: decode→encode is not the identity.
    texts = ["the cat sat on the mat and ate the hat", "naïve café über straße", "東京 大阪 京都 ümlaut"] * 20
    return train_tokenizer(texts, vocab_size=300)


D_VOCAB = 320  # 20 embedding rows beyond the tokenizer, as Pythia pads its embedding


def reference_config(tl_version: str = "2.x", **overrides) -> InductionConfig:
    settings = dict(repeat_len=6, n_sequences=6, batch_size=4, probe="reference", tl_version=tl_version)
    return InductionConfig(**{**settings, **overrides})


def test_reference_probe_follows_the_transformer_lens_bos_rule(tokenizer):
    tokens, lengths = make_reference_probe(tokenizer, D_VOCAB, reference_config("2.x"))
    single, single_lengths = make_reference_probe(tokenizer, D_VOCAB, reference_config("3.0"))
    assert (tokens[:, :2] == tokenizer.bos_token_id).all()  # the decoded text's BOS plus TL ≤ 2.x's own
    assert (single[:, 0] == tokenizer.bos_token_id).all() and (single[:, 1] != tokenizer.bos_token_id).all()
    torch.testing.assert_close(lengths, single_lengths + 1)
    assert len(lengths.unique()) > 1  # ids without a string vanish, fragments re-merge


def test_reference_probe_is_the_reference_draw_re_encoded(tokenizer):
    config = reference_config()
    tokens, lengths = make_reference_probe(tokenizer, D_VOCAB, config)
    torch.manual_seed(config.seed)  # the reference: set_seed, then the global generator
    drawn = torch.randint(0, D_VOCAB, (config.n_sequences, config.repeat_len))
    rows = torch.cat([torch.zeros(config.n_sequences, 1, dtype=torch.long), drawn, drawn], dim=1)
    for n, row in enumerate(rows):
        text = BOS_TEXT + tokenizer.decode(row.tolist())  # TL ≤ 2.x prepends the BOS string
        assert tokens[n, : lengths[n]].tolist() == tokenizer(text)["input_ids"]
    assert (lengths != 1 + 2 * config.repeat_len + 1).any()


def test_reference_scores_use_the_re_encoded_ids(tokenizer):
    loaded = random_model("gpt_neox", vocab_size=D_VOCAB)
    config = reference_config()
    tokens, lengths = make_reference_probe(tokenizer, D_VOCAB, config)
    scores = score_induction(loaded, tokens, config, lengths)
    expected = loop_scores(loaded, tokens, lengths)
    for metric in METRICS:
        torch.testing.assert_close(scores.values[metric], expected.values[metric], atol=1e-5, rtol=1e-4, msg=metric)
        torch.testing.assert_close(scores.stderr[metric], expected.stderr[metric], atol=1e-5, rtol=1e-4, msg=metric)
    one_chunk = score_induction(loaded, tokens, reference_config(batch_size=6), lengths)
    for metric in METRICS:
        torch.testing.assert_close(one_chunk.values[metric], scores.values[metric], atol=1e-6, rtol=1e-5)


def test_sequences_longer_than_the_context_are_refused(tokenizer):
    loaded = random_model("gpt2", vocab_size=D_VOCAB, n_positions=16)
    config = reference_config(repeat_len=10)
    tokens, lengths = make_reference_probe(tokenizer, D_VOCAB, config)
    with pytest.raises(ValueError, match="model's context is 16; lower repeat_len"):
        score_induction(loaded, tokens, config, lengths)
    clean = InductionConfig(repeat_len=10, n_sequences=2)
    with pytest.raises(ValueError, match="up to 21 tokens but the model's context is 16"):
        score_induction(loaded, make_probe(torch.arange(2, 40), 0, clean), clean)


def test_probe_mode_is_recorded_and_checked(tokenizer):
    assert InductionConfig().settings() == {"repeat_len": 50, "n_sequences": 1000, "seed": 42, "probe": "clean"}
    assert reference_config("2.15.4").settings()["tl_version"] == "2.15.4"
    with pytest.raises(ValueError, match="probe must be one of clean, reference"):
        InductionConfig(probe="raw")
    with pytest.raises(ValueError, match="tl_version must look like"):
        InductionConfig(tl_version="latest")
    with pytest.raises(ValueError, match="use make_reference_probe"):
        make_probe(torch.arange(2, 40), 0, reference_config())
    with pytest.raises(ValueError, match="use make_probe"):
        make_reference_probe(tokenizer, D_VOCAB, InductionConfig())
    loaded = random_model("gpt_neox")
    probe, clean = small_probe(loaded.vocab_size)
    with pytest.raises(ValueError, match="but lengths were not given"):
        score_induction(loaded, probe, reference_config())
    with pytest.raises(ValueError, match="but lengths were given"):
        score_induction(loaded, probe, clean, torch.full((probe.shape[0],), probe.shape[1]))
