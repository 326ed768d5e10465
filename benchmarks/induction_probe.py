"""Time the batched induction probe against scoring one sequence at a time, on the same model.

The model is a random-weight GPT-NeoX with the shape of a catalogued Pythia size (weights do not change
the cost), or a shape given by --layers/--heads/--d-model. Both runs score the same clean probe with the
same code (all four metrics, attention captured per layer); only the sequences per forward pass differ.
The one-at-a-time run is a lower bound on the reference's cost, which also keeps a full activation cache.

    python -m benchmarks.induction_probe --model pythia-70m --n-sequences 200 --checkpoints 2
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from dynamics.adapters import LoadedModel, from_module
from dynamics.scorers.induction import InductionConfig, make_probe, score_induction
from dynamics.sources.catalogue import pythia_model

ORDINARY_IDS = torch.arange(2, 50_254)  # Pythia's ordinary BPE ids (docs/methods.md, "Clean probe")


def build_model(args: argparse.Namespace) -> LoadedModel:
    shape = pythia_model(args.model)
    n_layers = args.layers or shape.n_layers
    n_heads = args.heads or shape.n_heads
    d_model = args.d_model or shape.d_model
    config = GPTNeoXConfig(
        vocab_size=shape.vocab_rows,
        hidden_size=d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        intermediate_size=4 * d_model,
        rotary_pct=shape.rotary_dims / shape.d_head,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config).to(device=args.device, dtype=getattr(torch, args.dtype))
    return from_module(model, attn_implementation="sdpa")


def time_checkpoint(loaded: LoadedModel, probe: torch.Tensor, config: InductionConfig) -> float:
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    score_induction(loaded, probe, config)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pythia-14m", help="catalogued Pythia size whose shape to use")
    parser.add_argument("--layers", type=int, help="override the number of layers")
    parser.add_argument("--heads", type=int, help="override the heads per layer")
    parser.add_argument("--d-model", type=int, help="override the model width")
    parser.add_argument("--n-sequences", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=50, help="sequences per pass in the batched run")
    parser.add_argument("--checkpoints", type=int, default=2, help="checkpoints timed per mode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, help="CPU threads (1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = build_model(args)
    batched = InductionConfig(n_sequences=args.n_sequences, batch_size=args.batch_size)
    one_at_a_time = InductionConfig(n_sequences=args.n_sequences, batch_size=1)
    probe = make_probe(ORDINARY_IDS, 0, batched)  # (sequence, 101)
    print(
        f"{args.model} shape: {loaded.n_layers} layers × {loaded.n_heads} heads, d_model {loaded.d_model}; "
        f"{args.n_sequences} sequences of {probe.shape[1]} tokens; {args.device} {args.dtype}, "
        f"{torch.get_num_threads()} threads"
    )
    time_checkpoint(loaded, probe[: 2 * args.batch_size], batched)  # warm-up: kernels, allocator
    results = {"batched": [], "one sequence at a time": []}
    for checkpoint in range(args.checkpoints):
        results["batched"].append(time_checkpoint(loaded, probe, batched))
        results["one sequence at a time"].append(time_checkpoint(loaded, probe, one_at_a_time))
        print(
            f"checkpoint {checkpoint}: batched {results['batched'][-1]:.2f} s, "
            f"one at a time {results['one sequence at a time'][-1]:.2f} s"
        )
    best = {mode: min(seconds) for mode, seconds in results.items()}
    print(
        f"per checkpoint (best of {args.checkpoints}): batched {best['batched']:.2f} s, "
        f"one at a time {best['one sequence at a time']:.2f} s, "
        f"ratio {best['one sequence at a time'] / best['batched']:.1f}×"
    )


if __name__ == "__main__":
    main()
