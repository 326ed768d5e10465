"""Warehouse write and query cost at Pythia scale, on a real DuckDB file with synthetic scores.

    python -m benchmarks.warehouse_io --layers 32 --heads 32 --steps 154 --tasks 37    # pythia-6.9b
    python -m benchmarks.warehouse_io --layers 6 --heads 8 --steps 154 --tasks 37      # pythia-70m

Writes `--steps` checkpoints of one model (head_scores: 5 metrics per head; head_task_scores: one FV
score per head and task; 3 checkpoint metrics), each with `write_checkpoint` as the sweep does (open,
one transaction, close), then times each analysis helper (each opens the file read-only, queries, and
closes). Prints per-checkpoint write time, file size, and one line per query.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from warehouse import queries, writes

METRICS = ("induction", "prev_token", "duplicate_token", "copying", "fv")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--steps", type=int, default=154)
    parser.add_argument("--tasks", type=int, default=37)
    parser.add_argument("--out", type=Path, help="warehouse file (default: a temporary one)")
    return parser.parse_args()


def score_frame(rng: np.random.Generator, step: int, layers: int, heads: int, metrics: tuple[str, ...],
                task: str | None = None) -> pl.DataFrame:
    n = layers * heads
    layer = np.repeat(np.arange(layers, dtype=np.int32), heads)
    head = np.tile(np.arange(heads, dtype=np.int32), layers)
    frames = [pl.DataFrame({"layer": layer, "head": head, "metric": metric, "value": rng.random(n)})
              for metric in metrics]
    return pl.concat(frames).with_columns(
        pl.lit("bench").alias("model"), pl.lit(step, dtype=pl.Int64).alias("step"), pl.lit("s").alias("settings_hash"),
        pl.lit(None, dtype=pl.Utf8).alias("flag"), *([pl.lit(task).alias("task")] if task else []),
    )


def main() -> None:
    args = parse_args()
    path = args.out or Path(tempfile.mkdtemp()) / "bench.duckdb"
    rng = np.random.default_rng(0)
    writes.upsert_model(path, "bench", "gpt_neox", "hub", args.layers, args.heads, 64 * args.heads, 64)
    steps = [0] + [2**i for i in range(10)] + list(range(1000, 1000 * (args.steps - 10), 1000))
    steps = steps[: args.steps]
    write_s = []
    for step in steps:
        heads = score_frame(rng, step, args.layers, args.heads, METRICS)
        tasks = pl.concat([score_frame(rng, step, args.layers, args.heads, ("fv",), f"task{t}")
                           for t in range(args.tasks)])
        metrics = pl.DataFrame({"model": "bench", "step": step, "settings_hash": "s",
                                "metric": ["icl_token_loss", "loss_early", "loss_late"], "value": rng.random(3),
                                "flag": pl.Series([None] * 3, dtype=pl.Utf8)})
        started = time.perf_counter()
        checkpoint = {"model": "bench", "step": step, "settings_hash": "s", "tokens": step * 2_097_152}
        writes.write_checkpoint(path, checkpoint, heads, tasks, metrics)
        write_s.append(time.perf_counter() - started)
    rows = len(heads) + len(tasks) + len(metrics)
    print(f"shape={args.layers}x{args.heads} checkpoints={len(steps)} rows_per_checkpoint={rows}")
    print(f"write_checkpoint_s median={np.median(write_s):.3f} p90={np.quantile(write_s, 0.9):.3f} "
          f"max={max(write_s):.3f} total={sum(write_s):.1f}")
    print(f"file_mb={path.stat().st_size / 2**20:.1f}")
    for name, call in (
        ("query_open_close", lambda: queries.query(path, "SELECT 1")),
        ("head_trajectories", lambda: queries.head_trajectories(path)),
        ("induction_to_fv_transitions", lambda: queries.induction_to_fv_transitions(path)),
        ("head_dimensionality", lambda: queries.head_dimensionality(path)),
        ("phase_change", lambda: queries.phase_change(path)),
        ("head_map_induction", lambda: queries.head_map(path, "bench", "induction")),
        ("completed_checkpoints", lambda: writes.completed_checkpoints(path, "bench", "s")),
    ):
        started = time.perf_counter()
        result = call()
        print(f"{name}_s={time.perf_counter() - started:.3f} rows={len(result)}")


if __name__ == "__main__":
    main()
