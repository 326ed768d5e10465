"""Sweep throughput from local disk: does loading the next checkpoint overlap scoring the current one?

Writes N random-weight checkpoints of a catalogue shape (or a toy shape) in the local layout, then
scores them with the sweep's own `ScoringWorker`, once reading the next checkpoint in the background
(as the sweep does) and once strictly one after the other, and prints per-checkpoint load, score and
wall time and the overlap = wall ÷ (load + score) (below 1: loading hides behind scoring).

    python -m benchmarks.sweep_throughput --shape pythia-410m --checkpoints 8 --device cuda
    python -m benchmarks.sweep_throughput --layers 4 --heads 4 --d-model 128 --checkpoints 6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.random_models import add_shape_arguments, shape_from_arguments
from dynamics.checkpoint_scorer import ScoringConfig
from dynamics.scorers.function_vectors import FunctionVectorConfig
from dynamics.scorers.induction import InductionConfig
from jobs.sweep.plan import WorkItem
from jobs.sweep.targets import ModelTarget, with_fingerprints
from jobs.sweep.worker import ScoringWorker


def write_run(root: Path, n_checkpoints: int, layers: int, heads: int, d_model: int, vocab: int) -> list[int]:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from dynamics.toy.corpus import CorpusConfig, generate_texts
    from dynamics.toy.tokenizer import BOS_TEXT, train_tokenizer

    documents, _ = generate_texts(0, CorpusConfig(n_stories=60, n_prompts=60, n_heldout_stories=4))
    tokenizer = train_tokenizer((d.replace(BOS_TEXT, "") for d in documents), vocab_size=512)
    config = GPTNeoXConfig(vocab_size=vocab, hidden_size=d_model, num_attention_heads=heads, num_hidden_layers=layers,
                           intermediate_size=4 * d_model, max_position_embeddings=2048, rotary_pct=0.25,
                           bos_token_id=0, eos_token_id=0)
    steps = [1000 * (i + 1) for i in range(n_checkpoints)]
    model = GPTNeoXForCausalLM(config)
    for step in steps:
        with torch.no_grad():  # a new checkpoint: perturb every weight
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 1e-3)
        model.save_pretrained(root / f"step{step}")
    tokenizer.save_pretrained(root)
    return steps


def sweep(target: ModelTarget, device: str, prefetch: bool) -> list[dict]:
    worker = ScoringWorker([target], device)
    items = [WorkItem(target.model_id, r, s) for r, s in zip(target.revisions, target.steps)]
    rows = []
    for i, item in enumerate(items):
        started = time.perf_counter()
        upcoming = items[i + 1] if prefetch and i + 1 < len(items) else None
        result = worker.score(item, upcoming, {})
        if result.status != "ok":
            raise RuntimeError(f"{item.revision}: {result.error}")
        rows.append({"step": item.step, "load_s": result.checkpoint["load_s"], "score_s": result.checkpoint["score_s"],
                     "wall_s": time.perf_counter() - started})
    return rows


def report(name: str, rows: list[dict]) -> float:
    print(f"\n{name}")
    print(f"{'step':>8} {'load_s':>8} {'score_s':>8} {'wall_s':>8}")
    for row in rows:
        print(f"{row['step']:>8} {row['load_s']:>8.3f} {row['score_s']:>8.3f} {row['wall_s']:>8.3f}")
    # the first checkpoint builds the model and the scorer: leave it out of the steady state
    steady = rows[1:] or rows
    wall = sum(r["wall_s"] for r in steady)
    overlap = wall / sum(r["load_s"] + r["score_s"] for r in steady)
    print(f"steady state: {wall / len(steady):.3f} s per checkpoint, overlap={overlap:.3f}")
    return wall / len(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser, layers=4, heads=4, d_model=128, vocab=512)
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fv-prompts", type=int, default=8, help="clean and corrupted FV prompts per task")
    parser.add_argument("--induction-sequences", type=int, default=100)
    args = parser.parse_args()
    shape = shape_from_arguments(args)
    layers, heads, d_model, vocab = shape.n_layers, shape.n_heads, shape.d_model, shape.vocab_size
    scoring = ScoringConfig(
        induction=InductionConfig(n_sequences=args.induction_sequences),
        function_vectors=FunctionVectorConfig(n_clean=args.fv_prompts, n_corrupted=args.fv_prompts),
        icl=None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        steps = write_run(root, args.checkpoints, layers, heads, d_model, vocab)
        target = with_fingerprints(ModelTarget(
            model_id="benchmark", source="local", location=str(root), revisions=tuple(f"step{s}" for s in steps),
            steps=tuple(steps), scoring=scoring,
        ))
        print(f"shape: {layers} layers × {heads} heads, d_model {d_model}, vocab {vocab}; {len(steps)} checkpoints "
              f"on {args.device}; FV {args.fv_prompts}+{args.fv_prompts} prompts per built-in task")
        serial = report("one after the other", sweep(target, args.device, prefetch=False))
        overlapped = report("next checkpoint read in the background (the sweep)",
                            sweep(replace(target), args.device, prefetch=True))
    print(f"\nratio={serial / overlapped:.3f} (serial ÷ overlapped seconds per checkpoint)")


if __name__ == "__main__":
    main()
