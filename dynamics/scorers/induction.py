"""Induction, previous-token, duplicate-token and copying scores from one batched pass over a repeated-token probe.

Pattern scores follow docs/methods.md, "Induction-family scores": the probe is BOS + r + r with r random
token ids; for each head the per-sequence score is the "mul" measure the reference actually computed
(docs/methods.md, "Pattern score formula"),
    s_n = Σ_{i,j} A[i,j]·D[i,j] / Σ_{i,j} A[i,j],
with D the detection pattern built from the sequence's own ids, and the final score is the plain mean
over sequences.

Two probes (docs/methods.md, "Clean probe" and "Reference probe"), recorded in `InductionConfig.settings()['probe']`:
- 'clean' (`make_probe`): [BOS] + r + r fed directly as ids, r drawn from ordinary token ids; one tensor.
- 'reference' (`make_reference_probe`): the reference's draw (torch seed, randint over all embedding rows),
  decoded to text and re-encoded through the BOS rule of the TransformerLens version it claims to match,
  right-padded with per-sequence lengths; D comes from the re-encoded ids.

Copying (Olsson et al. 2022 call an induction head's second half "copying": it raises the logit of the
token it attends to). We measure it as a direct logit attribution on the probe itself, not as the
eigenvalues of W_U·W_O·W_V·W_E, because this uses the head's real attention at the positions where
induction applies and the model's real final norm, costs one matrix product per layer inside the same
pass, and never forms a vocabulary-by-vocabulary matrix. Precisely: for every induction target (n, i, j)
(D[i,j] = 1, so key j follows an earlier copy of query token t_i; on the clean probe these are the
second-half positions i with j = i − 49, plus rare accidental repeats) the predicted token is t_j, the
correct next token. Head (l, h)'s direct effect on the logits at position i is
    Δ_i = W_U · (γ ⊙ P(W_O^h z^h_i)) / σ_i,
with z^h_i the head's slice of the o_proj input, P the mean subtraction of the final LayerNorm (identity
for RMSNorm), γ the final norm's weight and σ_i the divisor the final norm actually applied at that
position in this forward pass (sqrt(var + eps), resp. sqrt(mean square + eps)), i.e. the norm's scale is
frozen. Biases (o_proj, norm, unembedding) belong to no head and are left out. The score is
    copying(l, h) = mean over all targets of (Δ_i[t_j] − mean_v Δ_i[v])      (logit units),
pooled over every target of every sequence. Positive: the head writes towards the token an induction
head should copy; near 0: it writes nothing related; negative: it suppresses it.

Memory: only attention probabilities (one layer of one chunk at a time), the o_proj input at the target
positions and the final norm's divisor are captured; never a full activation cache or full-vocabulary logits.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from dynamics.adapters import LoadedModel, hooks, norm_rule
from dynamics.errors import InputError
from dynamics.scorers.estimates import HeadScores, mean_and_stderr, ratio_and_stderr

PATTERN_METRICS = ("induction", "prev_token", "duplicate_token")
METRICS = (*PATTERN_METRICS, "copying")
PROBE_MODES = ("clean", "reference")


@dataclass(frozen=True)
class InductionConfig:
    repeat_len: int = 50  # random tokens per copy; a sequence is BOS + r + r
    n_sequences: int = 1000
    seed: int = 42
    batch_size: int = 50  # sequences per forward pass; scores do not depend on it
    probe: str = "clean"  # 'clean' or 'reference' (docs/methods.md, "Induction-family scores")
    tl_version: str = "2.x"  # reference probe: TransformerLens version whose BOS rule the re-encoding follows

    def __post_init__(self) -> None:
        if self.repeat_len < 2:
            raise InputError(f"repeat_len must be at least 2 (got {self.repeat_len})")
        if self.n_sequences < 1 or self.batch_size < 1:
            raise InputError(f"n_sequences and batch_size must be positive (got {self.n_sequences}, {self.batch_size})")
        if self.probe not in PROBE_MODES:
            raise InputError(f"probe must be one of {', '.join(PROBE_MODES)} (got {self.probe!r})")
        _tl_major(self.tl_version)

    @property
    def double_bos(self) -> bool:
        """TransformerLens ≤ 2.x prepends BOS to text that already starts with it (docs/methods.md, "Reference probe")."""
        return _tl_major(self.tl_version) <= 2

    def settings(self) -> dict:
        """What the scores depend on: every field but batch_size, and tl_version only for the reference probe."""
        settings = asdict(self)
        del settings["batch_size"]
        if self.probe == "clean":
            del settings["tl_version"]
        return settings


def _tl_major(version: str) -> int:
    match = re.fullmatch(r"(\d+)(\.(\d+|x))*", version)
    if match is None or int(match.group(1)) < 1:
        raise InputError(f"tl_version must look like '2.x', '2.15.4' or '3.0' (got {version!r})")
    return int(match.group(1))


def ordinary_token_ids(tokenizer) -> Tensor:
    """Ids the clean induction probe draws from: no special, added or whitespace-only tokens."""
    excluded = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    ids = [i for i in range(len(tokenizer)) if i not in excluded and tokenizer.decode([i]).strip() != ""]
    return torch.tensor(ids, dtype=torch.long)


def make_probe(ordinary_ids: Tensor, bos_id: int, config: InductionConfig) -> Tensor:
    """Clean probe (docs/methods.md, "Clean probe"): (n_sequences, 1 + 2·repeat_len) ids, BOS then r then r.

    `ordinary_ids` are the ids r is drawn from (no special or whitespace tokens).
    """
    if config.probe != "clean":
        raise InputError(f"make_probe builds the clean probe but config.probe is {config.probe!r}; use make_reference_probe")
    generator = torch.Generator().manual_seed(config.seed)
    picks = torch.randint(0, len(ordinary_ids), (config.n_sequences, config.repeat_len), generator=generator)
    random_ids = ordinary_ids[picks]
    bos = torch.full((config.n_sequences, 1), bos_id, dtype=random_ids.dtype)
    return torch.cat([bos, random_ids, random_ids], dim=1)


def make_reference_probe(tokenizer, d_vocab: int, config: InductionConfig) -> tuple[Tensor, Tensor]:
    """Reference-compatible probe (docs/methods.md, "Reference probe"): right-padded ids (sequence, pos), lengths (sequence,).

    Draws `randint(0, d_vocab, (n_sequences, repeat_len))` from a CPU generator seeded with `config.seed`
    (the same stream as the reference's `torch.manual_seed` then `torch.randint`), decodes each row
    [BOS] + r + r with the Hugging Face `tokenizer` (its own decode defaults, as the reference), and
    re-encodes the text. Following TransformerLens's rule for GPT-NeoX models, a BOS id is prepended
    to the re-encoded text when `config.tl_version` is ≤ 2.x (the text already starts with the BOS
    string, so those sequences start with two BOS) and not from 3.0 on. Ids without a string vanish
    and BPE fragments re-merge, so lengths vary.
    """
    if config.probe != "reference":
        raise InputError(f"make_reference_probe needs config.probe='reference' (got {config.probe!r}); use make_probe")
    bos_id = tokenizer.bos_token_id
    if bos_id is None:
        raise InputError("the tokenizer has no bos_token_id; the reference probe starts every row with BOS")
    generator = torch.Generator().manual_seed(config.seed)
    random_ids = torch.randint(0, d_vocab, (config.n_sequences, config.repeat_len), generator=generator)
    bos = torch.full((config.n_sequences, 1), bos_id, dtype=random_ids.dtype)
    texts = tokenizer.batch_decode(torch.cat([bos, random_ids, random_ids], dim=1).tolist())
    prefix = [bos_id] if config.double_bos else []
    encoded = [prefix + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    lengths = torch.tensor([len(ids) for ids in encoded])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos_id
    tokens = torch.full((len(encoded), int(lengths.max())), pad_id, dtype=torch.long)
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)] = torch.tensor(ids)
    return tokens, lengths


def detection_patterns(tokens: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
    """0/1 patterns (batch, query, key) per metric, from the ids (TransformerLens head_detector semantics).

    `lengths` masks right padding (positions ≥ length get no target).
    """
    T = tokens.shape[1]
    query_pos = torch.arange(T)[:, None]
    key_pos = torch.arange(T)[None, :]
    same = tokens[:, :, None] == tokens[:, None, :]  # (batch, query, key)
    duplicate = same & (key_pos < query_pos)
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # key is the token after an earlier copy of the query
    induction &= key_pos <= query_pos
    prev = (key_pos == query_pos - 1).expand_as(duplicate)
    patterns = {"induction": induction, "prev_token": prev, "duplicate_token": duplicate}
    if lengths is not None:
        valid = torch.arange(T)[None, :] < lengths[:, None]  # (batch, pos)
        mask = valid[:, :, None] & valid[:, None, :]
        patterns = {k: v & mask for k, v in patterns.items()}
    return {k: v.float() for k, v in patterns.items()}


def _final_norm(model: LoadedModel) -> nn.Module:
    return model.model.get_submodule(model.family.final_norm)


def _final_norm_divisor(norm: nn.Module, hidden: Tensor) -> Tensor:
    """σ per position (batch, pos): what the final norm divides its (centred) input by."""
    hidden, rule = hidden.float(), norm_rule(norm)
    if rule.centres:  # LayerNorm
        return (hidden.var(dim=-1, unbiased=False) + rule.eps).sqrt()
    return (hidden.pow(2).mean(dim=-1) + rule.eps).sqrt()  # RMSNorm


def _readout_rows(model: LoadedModel, predicted: Tensor, unembed_mean: Tensor) -> Tensor:
    """Rows (target, d_model) whose dot product with a head's output o, divided by σ, is o's centred logit.

    centred logit of t = (W_U[t] − mean_v W_U[v]) · (γ ⊙ P(o)) / σ = P(γ ⊙ (W_U[t] − mean)) · o / σ,
    since the mean subtraction P is a symmetric projection.
    """
    rule = norm_rule(_final_norm(model))
    rows = model.model.get_output_embeddings().weight[predicted].float() - unembed_mean  # (target, d_model)
    if rule.weight is not None:
        rows = rows * rule.weight.float()
    if rule.centres:
        rows = rows - rows.mean(dim=-1, keepdim=True)
    return rows


@contextlib.contextmanager
def _capture_inputs(modules: list[nn.Module], receive: Callable[[int, Tensor], None]) -> Iterator[None]:
    """Call `receive(index, input)` with the first positional input of each module as it runs."""
    with hooks(
        module.register_forward_pre_hook(lambda _module, args, index=index: receive(index, args[0]))
        for index, module in enumerate(modules)
    ):
        yield


def _score_chunk(
    model: LoadedModel, chunk: Tensor, lengths: Tensor | None, unembed_mean: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass: per-sequence mul scores (metric, layer, sequence, head), per-sequence sums of the
    copying score's targets (layer, sequence, head), and each sequence's target count (sequence,)."""
    L, H, device = model.n_layers, model.n_heads, model.device
    patterns = detection_patterns(chunk, lengths)
    targets = torch.stack([patterns[m] for m in PATTERN_METRICS], dim=1).to(device)  # (batch, metric, query, key)
    chunk = chunk.to(device)
    pair_seq, pair_query, pair_key = patterns["induction"].to(device).nonzero(as_tuple=True)  # each (target,)
    readout = _readout_rows(model, chunk[pair_seq, pair_key], unembed_mean)  # (target, d_model)
    per_sequence = torch.zeros(len(PATTERN_METRICS), L, chunk.shape[0], H, dtype=torch.float64)
    direct = torch.zeros(L, len(pair_seq), H, device=device)  # copying numerators, before dividing by σ
    divisor: list[Tensor] = []  # (target,), filled by the final-norm hook
    valid = attention_mask = None
    if lengths is not None:
        valid = (torch.arange(chunk.shape[1])[None, :] < lengths[:, None]).to(device)  # (batch, pos)
        attention_mask = valid.long()

    def on_attention(layer: int, probs: Tensor) -> None:
        probs = probs.float()  # (batch, head, query, key)
        if valid is not None:  # padded queries and keys carry no attention mass
            probs = probs * (valid[:, None, :, None] & valid[:, None, None, :])
        denominator = probs.sum(dim=(-1, -2))  # (batch, head)
        scores = torch.einsum("bhqk,bmqk->mbh", probs, targets) / denominator  # (metric, batch, head)
        per_sequence[:, layer] = scores.double().cpu()

    def on_head_outputs(layer: int, z: Tensor) -> None:
        z = z[pair_seq, pair_query].float().view(-1, H, model.d_head)  # (target, head, d_head)
        write = readout @ model.o_proj_weight(layer).float()  # (target, head·d_head)
        direct[layer] = (write.view(-1, H, model.d_head) * z).sum(dim=-1)  # (target, head)

    def on_final_norm(_index: int, hidden: Tensor) -> None:
        divisor.append(_final_norm_divisor(_final_norm(model), hidden)[pair_seq, pair_query])

    o_projs = [model.o_proj(layer) for layer in range(L)]
    with (
        model.capture_attention(on_attention),
        _capture_inputs(o_projs, on_head_outputs),
        _capture_inputs([_final_norm(model)], on_final_norm),
    ):
        # The base model stops at the final norm: no (batch, pos, vocab) logits are ever built.
        model.model.base_model(input_ids=chunk, attention_mask=attention_mask, use_cache=False)
    copying = (direct / divisor[0][None, :, None]).double()  # (layer, target, head)
    copying_sums = torch.zeros(L, chunk.shape[0], H, dtype=torch.float64, device=device)
    copying_sums.index_add_(1, pair_seq, copying)
    counts = torch.bincount(pair_seq, minlength=chunk.shape[0])  # (batch,)
    return per_sequence, copying_sums.cpu(), counts.cpu()


@torch.no_grad()
def score_patterns(
    model: LoadedModel, tokens: Tensor, batch_size: int, lengths: Tensor | None = None
) -> HeadScores:
    """Every metric in METRICS, each (layer, head) with its standard error, over the rows of `tokens`.

    Pattern metrics are means of per-sequence mul scores; copying is the mean over all induction targets.
    Standard errors treat the sequences as the independent samples (docs/methods.md, "Standard errors").
    """
    n = tokens.shape[0]
    longest = int(lengths.max()) if lengths is not None else tokens.shape[1]
    if longest > model.n_ctx:
        raise InputError(
            f"probe sequences have up to {longest} tokens but the model's context is {model.n_ctx}; "
            "lower repeat_len (re-encoding can lengthen reference-probe sequences)"
        )
    unembed_mean = model.model.get_output_embeddings().weight.float().mean(dim=0)  # (d_model,)
    chunks = [
        _score_chunk(model, tokens[start : start + batch_size],
                     None if lengths is None else lengths[start : start + batch_size], unembed_mean)
        for start in range(0, n, batch_size)
    ]
    per_sequence = torch.cat([c[0] for c in chunks], dim=2)  # (metric, layer, sequence, head)
    values, stderr = {}, {}
    for index, metric in enumerate(PATTERN_METRICS):
        values[metric], stderr[metric] = mean_and_stderr(per_sequence[index], dim=1)
    # A probe without a single induction target leaves copying undefined: 0/0 is NaN, stored as flagged.
    values["copying"], stderr["copying"] = ratio_and_stderr(
        torch.cat([c[1] for c in chunks], dim=1), torch.cat([c[2] for c in chunks]), dim=1)
    return HeadScores({m: v.float() for m, v in values.items()}, {m: s.float() for m, s in stderr.items()})


def score_induction(
    model: LoadedModel, probe: Tensor, config: InductionConfig, lengths: Tensor | None = None
) -> HeadScores:
    """Induction, previous-token, duplicate-token and copying scores, each (layer, head), with standard errors.

    `probe` is `make_probe(...)` for config.probe == 'clean', or the tokens of `make_reference_probe(...)`
    with its `lengths` for 'reference'.
    """
    if (config.probe == "reference") != (lengths is not None):
        raise InputError(
            f"config.probe is {config.probe!r} but lengths were {'given' if lengths is not None else 'not given'}; "
            "pass both outputs of make_reference_probe for 'reference', only the make_probe tensor for 'clean'"
        )
    return score_patterns(model, probe, config.batch_size, lengths)
