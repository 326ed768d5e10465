"""Head ablations across training: which heads, how they are ablated, and the grid of measurements.

Head choice (docs/methods.md, "Head choice"; the reference's `get_heads_to_ablate`): rank all N = L·H
heads by the induction score, the FV score, or a random score (Python `random` seeded once, one draw per
head in layer-major order); stable descending sort. k = ⌊fraction·N⌋ (at least 1) for fraction < 1, else
an absolute count. With exclusion, the top ⌊0.02·N⌋ heads of the *other* score are removed first — the
other score is FV for induction and induction otherwise, so random-with-exclusion spares the top
induction heads, and models with fewer than 50 heads exclude nothing.

Ablation (docs/methods.md, "Mean and zero ablation" and "Token-loss ablation"):
- few-shot accuracy, method 'mean': each ablated head's slice of the o_proj input at the last position
  of whatever is processed (the final prompt token, then each generated token) becomes the cross-task
  mean activation (mean over tasks of μ^τ, `mean_head_activations`); 'zero' writes zeros there. In both
  the o_proj bias is still added, as in the reference hook.
- token-loss score: the reference's hook fails and falls back to writing each ablated head's value at
  position 0 into every position, so the head outputs its BOS value everywhere (attention weights sum to
  1). Method 'mean' reproduces exactly that: z_h[t] := z_h[0] at all positions (position 0 attends only
  to itself, so z_h[0] is its value vector). Method 'zero' sets z_h[t] := 0 at all positions.

`run_ablation_grid` measures every grid cell but evaluates each distinct (head set, method) once: on
small models most fractions select the same heads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import polars as pl
import torch
from torch import Tensor

from dynamics.adapters import LoadedModel, hooks
from dynamics.errors import InputError
from dynamics.experiments.few_shot import (
    IclAccuracy,
    IclEvalConfig,
    IclEvalPrompts,
    Intervention,
    evaluate_few_shot,
)
from dynamics.provenance import Provenance
from dynamics.scorers.token_loss import token_loss_score

logger = logging.getLogger(__name__)

RANKINGS = ("induction", "fv", "random")
METHODS = ("mean", "zero")
REFERENCE_FRACTIONS = (0.01, 0.03, 0.05, 0.07, 0.09, 0.15, 0.2)  # run.sh, without the clean run (0)
HELDOUT_TASK = "heldout"  # `task` of the token-loss rows

Head = tuple[int, int]


# --- which heads ------------------------------------------------------------------------------------


def random_head_scores(n_layers: int, n_heads: int, seed: int = 42) -> Tensor:
    """(layer, head) scores from `random.Random(seed)`, one draw per head in layer-major order."""
    rng = random.Random(seed)
    return torch.tensor([[rng.random() for _ in range(n_heads)] for _ in range(n_layers)], dtype=torch.float64)


def rank_heads(scores: Tensor) -> list[Head]:
    """All heads by descending score; ties keep layer-major order (Python's stable sort)."""
    n_layers, n_heads = scores.shape
    values = scores.tolist()
    keys = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    return sorted(keys, key=lambda key: values[key[0]][key[1]], reverse=True)


def ablation_count(amount: float, n_total: int) -> int:
    """Heads to ablate: ⌊amount·N⌋ but at least 1 when 0 < amount < 1; an absolute count when amount ≥ 1."""
    if amount < 0:
        raise InputError(f"the ablation amount must be ≥ 0 (got {amount}); use a fraction below 1 or a head count")
    if amount == 0:
        return 0
    if amount < 1:
        return max(1, int(amount * n_total))
    return int(amount)


def qualifying_heads(scores: Tensor, stderr: Tensor, floor: float, z: float) -> set[Head]:
    """Heads whose score is at least `floor` and more than `z` standard errors above zero
    (docs/methods.md, "Significance"): the only heads a ranking may call induction or FV heads."""
    # as the SQL views: a score without a standard error is significant only when no test is asked for (z = 0)
    known = ~torch.isnan(stderr)
    passes = (scores >= floor) & (known | (z == 0)) & (scores > z * torch.where(known, stderr, 0.0))
    return {(int(layer), int(head)) for layer, head in passes.nonzero().tolist()}


def select_heads(
    head_scores: Mapping[str, Tensor], ranking: str, amount: float, exclusion: bool,
    *, seed: int = 42, exclude_fraction: float = 0.02, eligible: Mapping[str, set[Head]] | None = None,
) -> list[Head]:
    """The heads ablated for (ranking, amount, exclusion), in ablation order.

    Args:
        head_scores: {'induction': (layer, head), 'fv': (layer, head)}; a ranking or exclusion needs its score.
        ranking: 'induction', 'fv' or 'random'.
        amount: fraction of all heads (< 1) or a head count (≥ 1); 0 ablates nothing.
        exclude_fraction: the other score's top heads kept out with exclusion: a fraction of all heads
            (< 1, rounded down as the reference does, so small models exclude none) or a head count.
        eligible: per score, the heads that qualify as heads of that kind (`qualifying_heads`); then the
            induction and FV rankings and exclusions take only those, and a cell may ablate fewer heads
            than asked. None ranks every head, as the reference does.
    """
    if ranking not in RANKINGS:
        raise InputError(f"ranking {ranking!r} is not one of {', '.join(RANKINGS)}")
    shape = tuple(next(iter(head_scores.values())).shape)
    n_total = math.prod(shape)
    k = ablation_count(amount, n_total)
    if k == 0:
        return []
    other = "fv" if ranking == "induction" else "induction"
    needed = ({ranking} - {"random"}) | ({other} if exclusion else set())
    missing = sorted(needed - set(head_scores))
    if missing:
        raise InputError(
            f"ablating by {ranking}{' with exclusion' if exclusion else ''} needs the {missing[0]!r} head score; "
            f"got only {', '.join(sorted(head_scores))}"
        )
    scores = random_head_scores(*shape, seed=seed) if ranking == "random" else head_scores[ranking]
    ranked = rank_heads(scores)
    if eligible is not None and ranking != "random":
        ranked = [head for head in ranked if head in eligible[ranking]]
    if exclusion:
        others = rank_heads(head_scores[other])
        if eligible is not None:
            others = [head for head in others if head in eligible[other]]
        n_excluded = int(exclude_fraction) if exclude_fraction >= 1 else int(exclude_fraction * n_total)
        excluded = set(others[:n_excluded])
        ranked = [head for head in ranked if head not in excluded]
    return ranked[:k]


# --- how they are ablated ----------------------------------------------------------------------------


def _by_layer(heads: Sequence[Head]) -> dict[int, list[int]]:
    layers: dict[int, list[int]] = {}
    for layer, head in heads:
        layers.setdefault(layer, []).append(head)
    return layers


def last_position_ablation(model: LoadedModel, heads: Sequence[Head], values: Tensor) -> Intervention:
    """Replace each head's o_proj input at the last processed position with `values[layer, head]` (d_head,).

    `values` is (layer, head, d_head): the cross-task mean for 'mean', zeros for 'zero'.
    """
    layers = {layer: torch.tensor(hs, device=model.device) for layer, hs in _by_layer(heads).items()}
    values = values.to(model.device)

    def intervention(positions: Tensor) -> contextlib.AbstractContextManager:
        rows = torch.arange(len(positions), device=model.device)

        def hook_for(layer: int, head_index: Tensor):
            def hook(_module, args):
                z = args[0].clone()  # (batch, pos, head·d_head)
                view = z.view(*z.shape[:2], model.n_heads, model.d_head)  # (batch, pos, head, d_head)
                view[rows[:, None], positions[:, None], head_index[None, :]] = values[layer, head_index].to(z.dtype)
                return (z, *args[1:])

            return hook

        return hooks(model.o_proj(layer).register_forward_pre_hook(hook_for(layer, index)) for layer, index in layers.items())

    return intervention


@contextlib.contextmanager
def all_position_ablation(model: LoadedModel, heads: Sequence[Head], method: str) -> Iterator[None]:
    """The token-loss ablation at every position: 'mean' → the head's BOS-position output, 'zero' → zeros."""
    if method not in METHODS:
        raise InputError(f"method {method!r} is not one of {', '.join(METHODS)}")

    def hook_for(head_index: Tensor):
        def hook(_module, args):
            z = args[0].clone()  # (batch, pos, head·d_head)
            view = z.view(*z.shape[:2], model.n_heads, model.d_head)  # (batch, pos, head, d_head)
            view[:, :, head_index] = view[:, :1, head_index] if method == "mean" else 0
            return (z, *args[1:])

        return hook

    layers = _by_layer(heads)
    with hooks(model.o_proj(layer).register_forward_pre_hook(hook_for(torch.tensor(hs, device=model.device)))
               for layer, hs in layers.items()):
        yield


# --- the grid ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AblationConfig:
    fractions: tuple[float, ...] = REFERENCE_FRACTIONS  # < 1: fraction of all heads; ≥ 1: head counts
    rankings: tuple[str, ...] = RANKINGS
    methods: tuple[str, ...] = METHODS
    exclusions: tuple[bool, ...] = (False, True)
    exclude_fraction: float = 0.02  # the reference's excl_num; ≥ 1: a head count
    seed: int = 42  # random ranking
    # which heads the induction and FV rankings may take (docs/methods.md, "Significance")
    induction_floor: float = 0.25
    fv_floor: float = 0.001
    z: float = 3.0

    def __post_init__(self) -> None:
        problems = []
        if any(f <= 0 for f in self.fractions) or len(set(self.fractions)) != len(self.fractions):
            problems.append(f"fractions must be distinct and > 0 (got {self.fractions}); the clean run is always added")
        for name, given, allowed in (("rankings", self.rankings, RANKINGS), ("methods", self.methods, METHODS)):
            if not given or set(given) - set(allowed):
                problems.append(f"{name} must be a non-empty subset of {allowed} (got {given})")
        if not self.exclusions:
            problems.append("exclusions must hold False, True or both")
        if self.exclude_fraction < 0 or (self.exclude_fraction >= 1 and self.exclude_fraction != int(self.exclude_fraction)):
            problems.append(f"exclude_fraction must be a fraction in [0, 1) or a whole head count (got {self.exclude_fraction})")
        if problems:
            raise InputError(f"AblationConfig: {'; '.join(problems)}")

    def settings(self) -> dict:
        return {
            **asdict(self),
            "mean_ablation": "last_position_cross_task_mean",
            "token_loss_ablation": {"mean": "bos_output_all_positions", "zero": "zero_all_positions"},
        }


@dataclass(frozen=True)
class AblationCell:
    """One grid point; `heads` empty for the clean run (fraction 0)."""

    ranking: str
    fraction: float
    exclusion: bool
    heads: tuple[Head, ...]


def plan_ablations(head_scores: Mapping[str, Tensor], config: AblationConfig,
                   head_stderr: Mapping[str, Tensor] | None = None) -> list[AblationCell]:
    """The clean run per ranking (fraction 0, no exclusion, as the reference grid) plus every grid point.

    With `head_stderr` the induction and FV rankings take only heads that qualify (`qualifying_heads`
    with the config's floors and z); without, every head, as the reference.
    """
    eligible = None
    if head_stderr is not None:
        floors = {"induction": config.induction_floor, "fv": config.fv_floor}
        eligible = {m: qualifying_heads(head_scores[m], head_stderr[m], floors[m], config.z)
                    for m in floors if m in head_scores and m in head_stderr}
        eligible = {m: eligible.get(m, set()) for m in floors}
    cells = [AblationCell(ranking, 0.0, False, ()) for ranking in config.rankings]
    for ranking in config.rankings:
        for exclusion in config.exclusions:
            for fraction in config.fractions:
                heads = select_heads(head_scores, ranking, fraction, exclusion, seed=config.seed,
                                     exclude_fraction=config.exclude_fraction, eligible=eligible)
                cells.append(AblationCell(ranking, fraction, exclusion, tuple(heads)))
    return cells


@dataclass(frozen=True)
class HeldoutTokens:
    """Rows for the token-loss score under ablation and its two positions."""

    tokens: Tensor  # (rows, T), each row starting with BOS
    early: int
    late: int


def cross_task_mean(model: LoadedModel, means: Tensor) -> Tensor:
    """(layer, head, d_head) fp32: the mean over tasks of μ^τ (task, layer, head, d_head); a 3-d tensor is taken as is."""
    mean_values = means.float().mean(dim=0) if means.ndim == 4 else means.float()
    if tuple(mean_values.shape) != (model.n_layers, model.n_heads, model.d_head):
        raise InputError(
            f"means has shape {tuple(means.shape)}; expected (task, {model.n_layers}, {model.n_heads}, {model.d_head}) "
            "from mean_head_activations on this model"
        )
    return mean_values


def _measure(
    model: LoadedModel, heads: tuple[Head, ...], method: str, prompts: IclEvalPrompts, mean_values: Tensor,
    eval_config: IclEvalConfig, heldout: HeldoutTokens | None, clean: IclAccuracy | None,
) -> dict[tuple[str, str], float]:
    """{(task, metric): value} under one ablation (`clean` is reused for the empty head set)."""
    if heads:
        values = mean_values if method == "mean" else torch.zeros_like(mean_values)
        accuracy = evaluate_few_shot(model, prompts, eval_config, last_position_ablation(model, heads, values))
    else:
        accuracy = clean if clean is not None else evaluate_few_shot(model, prompts, eval_config)
    measured = {(task, metric): value for task, means in accuracy.task_means().items() for metric, value in means.items()}
    if heldout is not None:
        with all_position_ablation(model, heads, method):
            losses = token_loss_score(model, heldout.tokens, heldout.early, heldout.late)
        measured.update({(HELDOUT_TASK, metric): value for metric, value in losses.items()})
    return measured


ABLATION_SCHEMA = {
    "model": pl.Utf8, "step": pl.Int64, "settings_hash": pl.Utf8, "ranking": pl.Utf8, "fraction": pl.Float64,
    "exclusion": pl.Boolean, "method": pl.Utf8, "task": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64,
    "flag": pl.Utf8, "n_ablated": pl.Int32, "heads": pl.Utf8, "revision": pl.Utf8, "weights_sha256": pl.Utf8,
    "dtype": pl.Utf8, "attn_impl": pl.Utf8, "code_version": pl.Utf8,
}


def run_ablation_grid(
    model: LoadedModel,
    prompts: IclEvalPrompts,
    head_scores: Mapping[str, Tensor],
    means: Tensor,
    provenance: Provenance,
    config: AblationConfig = AblationConfig(),
    eval_config: IclEvalConfig = IclEvalConfig(),
    heldout: HeldoutTokens | None = None,
    clean: IclAccuracy | None = None,
    head_stderr: Mapping[str, Tensor] | None = None,
) -> pl.DataFrame:
    """Rows of the warehouse `ablations` table for one checkpoint.

    Args:
        head_scores: {'induction', 'fv'}: (layer, head) scores of this checkpoint.
        head_stderr: their standard errors; given, the induction and FV rankings take only qualifying heads.
        means: μ^τ as (task, layer, head, d_head) (`mean_head_activations`); their mean over tasks is the
            'mean' ablation value. A (layer, head, d_head) tensor is taken as that mean already.
        heldout: rows for the token-loss score under ablation; None skips it.
        clean: the unablated `evaluate_few_shot` result, if already computed.
    Returns:
        One row per (cell, method, task, metric): metrics 'f1' and 'top1' per evaluation task, and
        'icl_token_loss', 'loss_early', 'loss_late' for task 'heldout'. The clean run is written for
        every ranking and method.
    """
    mean_values = cross_task_mean(model, means)
    measured: dict[tuple[tuple[Head, ...], str], dict] = {}
    records = []
    for cell in plan_ablations(head_scores, config, head_stderr):
        for method in config.methods:
            key = (cell.heads, method if cell.heads else "")  # the clean run is the same for every method
            if key not in measured:
                measured[key] = _measure(model, cell.heads, method, prompts, mean_values, eval_config, heldout, clean)
                logger.debug("ablated %s (%s): %d heads", cell.ranking, method, len(cell.heads))
            heads_json = json.dumps([list(h) for h in cell.heads])
            for (task, metric), value in measured[key].items():
                finite = math.isfinite(value)
                records.append({
                    **provenance.columns(), "ranking": cell.ranking, "fraction": cell.fraction,
                    "exclusion": cell.exclusion, "method": method, "task": task, "metric": metric,
                    "value": value if finite else None, "flag": None if finite else "non_finite",
                    "n_ablated": len(cell.heads), "heads": heads_json,
                })
    logger.info("ablation grid: %d rows from %d distinct ablations", len(records), len(measured))
    return pl.DataFrame(records, schema=ABLATION_SCHEMA)
