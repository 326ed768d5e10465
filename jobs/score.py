"""`dynamics score`: score one checkpoint and print a per-layer summary (no Ray, no warehouse)."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from dynamics.errors import MissingInputError
from dynamics.sources.catalogue import is_catalogue_name, step_for_revision
from dynamics.sources.checkpoints import LocalSource
from jobs.export import write_frame
from jobs.sweep.config import SweepConfig, add_scoring_arguments
from jobs.sweep.plan import WorkItem
from jobs.sweep.targets import build_targets
from jobs.sweep.worker import ScoringWorker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face model id, e.g. EleutherAI/pythia-70m-deduped")
    source.add_argument("--local", type=Path, help="a local run: folder of step<N>/ (or checkpoint-<N>/) checkpoints")
    parser.add_argument("--revision", required=True,
                        help="revision to score, e.g. step1000 (or main), or the repo's own name for it, e.g. "
                             "step20000-tokens84B; with --local, the checkpoint's folder name, e.g. checkpoint-500")
    add_scoring_arguments(parser.add_argument_group("how to score (as for `dynamics sweep`)"))
    parser.add_argument("--cache-dir", type=Path, help="Hugging Face cache (default: HF's)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", type=Path, help="also write every head-score row to this Parquet file")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and not args.out.parent.is_dir():  # before minutes of scoring, not after
        raise MissingInputError(f"the folder of --out {args.out} does not exist; create it first")
    if args.local is not None:
        selection = {"steps": str(_local_step(args.local, args.revision))}
    elif is_catalogue_name(args.model):
        selection = {"steps": str(step_for_revision(args.revision))}
    else:  # a Hub repo outside the Pythia catalogue names its revisions its own way (dynamics.sources.revisions)
        selection = {"revisions": args.revision}
    scoring = {k: v for k, v in vars(args).items()
               if v is not None and k not in ("model", "local", "revision", "device", "out", "run", "command")}
    config = SweepConfig.from_args(argparse.Namespace(
        **scoring, **selection, **({"model": [args.model]} if args.model else {"local": [str(args.local)]}),
    ))
    [target] = build_targets(config)
    worker = ScoringWorker([target], args.device)
    result = worker.score_one(WorkItem(target.model_id, target.revisions[0], target.steps[0]))
    rows = result.scored.head_scores
    if args.out:
        write_frame(rows, args.out, "parquet")
    print(f"{target.model_id} {args.revision} ({result.scored.dtype}, weights sha256 {result.checkpoint['weights_sha256'][:12]})")
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, float_precision=4):
        print(layer_summary(rows))
    for name, value in sorted(_metrics(result.scored.checkpoint_metrics).items()):
        print(f"{name}: {value:.4f}")
    return 0


def _local_step(run: Path, revision: str) -> int:
    """The step of a local run's checkpoint folder (step<N> or checkpoint-<N>, read as the sweep reads them); a
    name that is no folder is read as a step branch, so that the sweep's error names the nearest steps."""
    steps = {name: step for step, name in LocalSource(run).steps().items()}
    return steps[revision] if revision in steps else step_for_revision(revision)


def layer_summary(rows: pl.DataFrame) -> pl.DataFrame:
    """Per layer and metric: the best head and its score, and the mean over heads."""
    best = (
        rows.filter(pl.col("value").is_not_null())
        .sort("value", descending=True)
        .group_by("layer", "metric", maintain_order=True)
        .agg(pl.col("head").first().alias("best_head"), pl.col("value").first().alias("best"),
             pl.col("value").mean().alias("mean"))
    )
    return best.pivot(on="metric", index="layer", values=["best_head", "best", "mean"]).sort("layer")


def _metrics(frame: pl.DataFrame) -> dict[str, float]:
    return {m: v for m, v in frame.select("metric", "value").iter_rows() if v is not None}
