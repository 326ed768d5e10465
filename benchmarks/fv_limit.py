"""How close the FV fast path comes to the compute-bound limit: its time against plain batched forwards doing the same work.

    python -m benchmarks.fv_limit --layers 12 --heads 12 --d-model 192 --threads 2
    python -m benchmarks.fv_limit --shape pythia-410m --device cuda --dtype bfloat16

The work is what `mean_head_activations` and `score_function_vectors` run for the prompts, counted in
real tokens (padding is overhead, not work), with L layers and H heads:

    token-forwards   = Σ clean prompt tokens + Σ corrupted prompt tokens + N_corrupted · H·(L+1)/2
    unembedding rows = N_corrupted · (L·H + 1)

The last token-forward term: the fast path carries the row patching head (l, h) through blocks l…L−1
as one token, so a prompt's L·H rows make H·L(L+1)/2 single-token block passes, H·(L+1)/2 forwards
through all L blocks (docs/performance.md, "FV fast path cost", also gives the strict minimum H·(L−1)/2,
printed beside it). The unembedding rows are the L·H patched rows plus the unpatched one per prompt.

Compute-bound time = token-forwards ÷ the tokens/s of a plain batched forward through the blocks
(B × T random tokens, same model and dtype) + unembedding rows ÷ the rows/s of the unembedding over
those B·T rows. It ignores that FV's prompts attend over more keys than the T/2 of the plain forward
(a few % of a block's FLOPs at T ≈ 100). The last line is
`limit_fraction=<compute-bound s ÷ FV s> fv_over_limit=<FV s ÷ compute-bound s>`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from benchmarks.fv_scoring import DTYPES, prompt_subset, task_tokenizer, timed
from benchmarks.random_models import add_shape_arguments, build_random_model, shape_from_arguments
from dynamics.adapters import LoadedModel
from dynamics.scorers.function_vectors import (
    FunctionVectorConfig,
    FunctionVectorScores,
    mean_head_activations,
    score_function_vectors,
)
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.prompts import PromptSet, build_prompt_set


@dataclass(frozen=True)
class FvWork:
    """What one FV scoring of a prompt set computes on the fast path (see the module docstring)."""

    clean_tokens: int  # through all L blocks once (the mean activations)
    corrupted_tokens: int  # through all L blocks once (the unpatched pass)
    patched_token_forwards: float  # N_corrupted · H·(L+1)/2
    unembedding_rows: int  # N_corrupted · (L·H + 1)
    minimal_token_forwards: float  # the strict minimum: clean + corrupted + N_corrupted · H·(L−1)/2

    @property
    def token_forwards(self) -> float:
        return self.clean_tokens + self.corrupted_tokens + self.patched_token_forwards


@dataclass(frozen=True)
class Throughput:
    """A plain batched forward's speed: tokens through every block, and rows through the unembedding."""

    tokens_per_s: float
    unembedding_rows_per_s: float
    batch: int
    length: int


@dataclass(frozen=True)
class FvTiming:
    """One FV scoring of a checkpoint: the mean activations, then the indirect effects."""

    means_s: float
    scores_s: float
    scores: FunctionVectorScores

    @property
    def total_s(self) -> float:
        return self.means_s + self.scores_s


def count_fv_work(prompt_set: PromptSet, n_layers: int, n_heads: int) -> FvWork:
    clean = sum(len(p.input_ids) for task in prompt_set.tasks for p in task.clean)
    corrupted = sum(len(p.input_ids) for task in prompt_set.tasks for p in task.corrupted)
    n_corrupted = sum(len(task.corrupted) for task in prompt_set.tasks)
    return FvWork(
        clean_tokens=clean,
        corrupted_tokens=corrupted,
        patched_token_forwards=n_corrupted * n_heads * (n_layers + 1) / 2,
        unembedding_rows=n_corrupted * (n_layers * n_heads + 1),
        minimal_token_forwards=clean + corrupted + n_corrupted * n_heads * (n_layers - 1) / 2,
    )


@torch.no_grad()
def measure_throughput(model: LoadedModel, batch: int = 64, length: int = 80, repeats: int = 5, warmup: int = 2) -> Throughput:
    """Best-of-`repeats` speed of a plain batched forward of `batch` × `length` random tokens, after `warmup` runs."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.vocab_size, (batch, length), generator=generator).to(model.device)  # (batch, pos)
    body = model.model.base_model

    def blocks() -> torch.Tensor:
        return body(input_ids=ids, use_cache=False).last_hidden_state  # (batch, pos, d_model)

    hidden = blocks().reshape(batch * length, model.d_model)
    for _ in range(warmup):
        blocks()
        model.logits_from_residual(hidden)
    body_s = min(timed(blocks, model.device)[1] for _ in range(repeats))
    unembed_s = min(timed(lambda: model.logits_from_residual(hidden), model.device)[1] for _ in range(repeats))
    return Throughput(batch * length / body_s, batch * length / unembed_s, batch, length)


def compute_bound_s(work: FvWork, throughput: Throughput) -> float:
    return work.token_forwards / throughput.tokens_per_s + work.unembedding_rows / throughput.unembedding_rows_per_s


def time_function_vectors(model: LoadedModel, prompt_set: PromptSet, config: FunctionVectorConfig) -> FvTiming:
    """Mean activations and fast-path scores of `prompt_set`, each timed (the device's queue drained)."""
    means, means_s = timed(lambda: mean_head_activations(model, prompt_set, config), model.device)
    scores, scores_s = timed(lambda: score_function_vectors(model, prompt_set, means, config), model.device)
    return FvTiming(means_s, scores_s, scores)


def describe_work(work: FvWork, throughput: Throughput, limit_s: float) -> str:
    return (
        f"work: {work.token_forwards:,.0f} token-forwards ({work.clean_tokens:,} clean + {work.corrupted_tokens:,} "
        f"corrupted prompt tokens + {work.patched_token_forwards:,.0f} patched = N·H·(L+1)/2; strict minimum "
        f"{work.minimal_token_forwards:,.0f}) and {work.unembedding_rows:,} unembedding rows = N·(L·H + 1)\n"
        f"plain batched forward ({throughput.batch} × {throughput.length} tokens): {throughput.tokens_per_s:,.0f} "
        f"tokens/s through the blocks, {throughput.unembedding_rows_per_s:,.0f} rows/s through the unembedding "
        f"→ compute-bound {limit_s:.3f} s"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser, layers=12, heads=12, d_model=192, vocab=50_304)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--tasks", type=int, default=4, help="built-in tasks to use")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--clean", type=int, default=16, help="clean prompts per task")
    parser.add_argument("--corrupted", type=int, default=16, help="corrupted prompts per task")
    parser.add_argument("--batch-size", type=int, default=16, help="fast path: prompts per batch")
    parser.add_argument("--tokenizer-vocab", type=int, default=4096,
                        help="BPE entries learned from the task texts (≥ ~2000: prompt lengths like Pythia's)")
    parser.add_argument("--throughput-batch", type=int, default=64)
    parser.add_argument("--throughput-length", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of the plain forward (best is kept)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape = shape_from_arguments(args)
    tasks = builtin_tasks()
    names = sorted(tasks)[: args.tasks]
    tokenizer = task_tokenizer(tasks, args.tokenizer_vocab)
    prompt_set = build_prompt_set(tasks, tokenizer, names=names, n_shots=args.shots, n_clean=args.clean,
                                  n_corrupted=args.corrupted)
    model = build_random_model(shape, args.device, DTYPES[args.dtype])
    config = FunctionVectorConfig(batch_size=args.batch_size)
    lengths = [len(p.input_ids) for t in prompt_set.tasks for p in t.corrupted]
    print(f"model: random-weight {shape.describe()}, {model.dtype}, {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"prompts: {len(names)} built-in tasks, {args.shots} shots, {args.clean} clean + {args.corrupted} corrupted "
          f"per task, mean length {sum(lengths) / len(lengths):.0f} tokens")

    warmup = prompt_subset(prompt_set, 1, args.batch_size, args.batch_size)
    time_function_vectors(model, warmup, config)  # first-call allocations and kernel choices stay out of the timing
    throughput = measure_throughput(model, args.throughput_batch, args.throughput_length, args.repeats)
    timing = time_function_vectors(model, prompt_set, config)
    work = count_fv_work(prompt_set, model.n_layers, model.n_heads)
    limit_s = compute_bound_s(work, throughput)
    print(describe_work(work, throughput, limit_s))
    print(f"FV fast path: {timing.total_s:.3f} s (means {timing.means_s:.3f} s + indirect effects {timing.scores_s:.3f} s)")
    print(f"limit_fraction={limit_s / timing.total_s:.3f} fv_over_limit={timing.total_s / limit_s:.2f}")


if __name__ == "__main__":
    main()
