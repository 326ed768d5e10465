"""FV scoring: the reference per-head loop against the fast path, same model, same prompts, same means.

    python -m benchmarks.fv_scoring --layers 12 --heads 12 --d-model 192 --tasks 4 --corrupted 10
    python -m benchmarks.fv_scoring --shape pythia-160m --device cuda --dtype bfloat16 --oracle-trials 1
    python -m benchmarks.fv_scoring --checkpoint runs/toy/toy-s/step512

Times the indirect-effect phase of both implementations (the mean activations are computed once,
batched, and shared; their time is printed separately). `--oracle-trials K` runs the oracle on the
first K corrupted prompts per task only and scales its time by n_corrupted / K (the reference's cost
is linear in trials: 1 + L·H batch-1 forwards each); max_abs_diff then compares the two
implementations on those K trials. Random weights are a GPT-NeoX with the given shape (Pythia's layout:
parallel residual, rotary on a quarter of each head); weights' values do not change timing.
The last line is `ratio=<oracle s / fast s> max_abs_diff=<largest |difference| over all heads>`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from benchmarks.random_models import add_shape_arguments, build_random_model, shape_from_arguments
from dynamics.adapters import LoadedModel, load_model
from dynamics.scorers.function_vectors import (
    FunctionVectorConfig,
    FunctionVectorScores,
    mean_head_activations,
    score_function_vectors,
    score_function_vectors_reference,
)
from dynamics.tasks.base import IclTask
from dynamics.tasks.builtin import builtin_tasks
from dynamics.tasks.prompts import PromptSet, TaskPrompts, build_prompt_set
from dynamics.toy.tokenizer import train_tokenizer

T = TypeVar("T")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model (one of --shape, --checkpoint, or the explicit shape flags)")
    model.add_argument("--checkpoint", type=Path, help="a save_pretrained folder (its tokenizer is used if present)")
    add_shape_arguments(model, layers=12, heads=12, d_model=192, vocab=50_304)
    model.add_argument("--init-range", type=float, default=0.02,
                       help="std of the random weights; larger values give larger, easier-to-compare effects")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--tasks", type=int, default=4, help="built-in tasks to use")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--clean", type=int, default=10, help="clean prompts per task")
    parser.add_argument("--corrupted", type=int, default=10, help="corrupted prompts per task")
    parser.add_argument("--oracle-trials", type=int, help="time the oracle on this many trials per task and scale")
    parser.add_argument("--batch-size", type=int, default=16, help="fast path: prompts per batch")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args()


def build_model(args: argparse.Namespace) -> tuple[LoadedModel, str]:
    if args.checkpoint is not None:
        return load_model(args.checkpoint, dtype=DTYPES[args.dtype], device=args.device), str(args.checkpoint)
    shape = shape_from_arguments(args)
    model = build_random_model(shape, args.device, DTYPES[args.dtype], init_range=args.init_range)
    return model, f"random-weight {args.shape or 'gpt_neox'} (init std {args.init_range})"


def task_tokenizer(tasks: Mapping[str, IclTask], vocab_size: int = 400):
    """A byte-level BPE trained on the tasks' own Q:/A: texts; with a few thousand entries (every merge the
    texts allow) prompts have about the token counts Pythia's tokenizer gives them."""
    texts = [f"Q: {x}\nA: {y}\n\n" for task in tasks.values() for x, y in task.train + task.valid]
    return train_tokenizer(texts, vocab_size=vocab_size)


def load_tokenizer(args: argparse.Namespace, tasks: dict):
    if args.checkpoint is not None and (args.checkpoint / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(args.checkpoint)
    return task_tokenizer(tasks)


def prompt_subset(
    prompt_set: PromptSet, n_tasks: int | None = None, n_clean: int | None = None, n_corrupted: int | None = None
) -> PromptSet:
    """The first `n_tasks` tasks of the set, each with its first `n_clean` clean and `n_corrupted` corrupted
    prompts (None keeps all)."""
    tasks = tuple(TaskPrompts(t.task, t.clean[:n_clean], t.corrupted[:n_corrupted]) for t in prompt_set.tasks[:n_tasks])
    return PromptSet(tasks=tasks, seed=prompt_set.seed)


def first_trials(prompt_set: PromptSet, n: int) -> PromptSet:
    """The same set with only the first `n` corrupted prompts of each task."""
    return prompt_subset(prompt_set, n_corrupted=n)


def timed(fn: Callable[[], T], device: str | torch.device) -> tuple[T, float]:
    """`fn()` and its wall time in seconds, the device's queued work included."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def max_difference(a: FunctionVectorScores, b: FunctionVectorScores) -> float:
    """The largest |difference| of two scorings' per-task scores, over every task and head."""
    return max(float((a.per_task[t] - b.per_task[t]).abs().max()) for t in a.per_task)


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tasks = builtin_tasks()
    tokenizer = load_tokenizer(args, tasks)
    model, name = build_model(args)
    names = sorted(tasks)[: args.tasks]
    prompt_set = build_prompt_set(
        tasks, tokenizer, names=names, n_shots=args.shots, n_clean=args.clean, n_corrupted=args.corrupted
    )
    lengths = [len(p.input_ids) for t in prompt_set.tasks for p in t.corrupted]
    config = FunctionVectorConfig(batch_size=args.batch_size)
    L, H = model.n_layers, model.n_heads
    print(f"model: {name} ({L} layers x {H} heads, d_model {model.d_model}, vocab {model.vocab_size}), "
          f"{model.dtype}, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"prompts: {len(names)} tasks ({', '.join(names)}), {args.shots} shots, {args.clean} clean + "
          f"{args.corrupted} corrupted per task, corrupted lengths {min(lengths)}-{max(lengths)} tokens")

    means, means_s = timed(lambda: mean_head_activations(model, prompt_set, config), args.device)
    print(f"mean activations (shared by both): {means_s:.2f} s")
    fast, fast_s = timed(lambda: score_function_vectors(model, prompt_set, means, config), args.device)
    print(f"fast: {fast_s:.2f} s for {len(names) * args.corrupted} trials")

    n_oracle = min(args.oracle_trials or args.corrupted, args.corrupted)
    oracle_set = first_trials(prompt_set, n_oracle)
    oracle, oracle_measured_s = timed(lambda: score_function_vectors_reference(model, oracle_set, means), args.device)
    forwards = len(names) * n_oracle * (1 + L * H)
    oracle_s = oracle_measured_s * args.corrupted / n_oracle
    if n_oracle < args.corrupted:
        fast_subset = score_function_vectors(model, oracle_set, means, config)
        difference = max_difference(fast_subset, oracle)
        print(f"oracle: measured {oracle_measured_s:.2f} s on {n_oracle} of {args.corrupted} trials per task "
              f"({forwards} batch-1 forwards, {1e3 * oracle_measured_s / forwards:.2f} ms each), scaled to "
              f"{oracle_s:.2f} s; max_abs_diff is over those {n_oracle} trials per task")
    else:
        difference = max_difference(fast, oracle)
        print(f"oracle: {oracle_s:.2f} s ({forwards} batch-1 forwards, {1e3 * oracle_s / forwards:.2f} ms each)")
    largest_task = max(float(t.abs().max()) for t in oracle.per_task.values())
    print(f"largest |FV| {float(oracle.fv.abs().max()):.3e}, largest |per-task mean IE| {largest_task:.3e}")
    print(f"ratio={oracle_s / fast_s:.1f} max_abs_diff={difference:.3e}")


if __name__ == "__main__":
    main()
