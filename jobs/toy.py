"""`dynamics toy`: train (or reuse) the offline toy model suite and print its per-checkpoint scores."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dynamics.toy.suite import PRESETS, ensure_suite, read_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS), help="suite size (default: CPU-sized)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="suite directory (default: $DYNAMICS_HOME/toy/<config hash>, DYNAMICS_HOME=~/.cache/training-dynamics)",
    )
    parser.add_argument("--device", default=None, choices=("cpu", "cuda"), help="training device (default: the preset's)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the preset's)")
    parser.add_argument("--force", action="store_true", help="retrain even if the suite directory is finished")


def format_scores(manifest: dict) -> str:
    """A table: one row per (model, step) with best induction / prev-token scores and the token-loss score."""
    header = f"{'model':<16} {'step':>6} {'induction':>9} {'prev_tok':>8} {'loss@early':>10} {'loss@late':>9} {'late-early':>10}"
    lines = [header]
    for model, rows in manifest["checkpoint_scores"].items():
        for r in rows:
            lines.append(
                f"{model:<16} {r['step']:>6} {r['induction_best']:>9.3f} {r['prev_token_best']:>8.3f} "
                f"{r['loss_early']:>10.3f} {r['loss_late']:>9.3f} {r['icl_token_loss']:>10.3f}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    suite_dir = ensure_suite(args.preset, out=args.out, seed=args.seed, device=args.device, force=args.force)
    manifest = read_manifest(suite_dir)
    probe = manifest["config"]["probe"]
    print(f"toy suite: {suite_dir}")
    print(
        f"trained in {manifest['elapsed_s']} s; induction = best head's score on "
        f"{probe['induction']['n_sequences']} clean probes; token loss at positions {probe['early']} and {probe['late']}"
    )
    print(format_scores(manifest))
    return 0


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["toy", *sys.argv[1:]]))
