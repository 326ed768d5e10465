#!/usr/bin/env python
"""Sweep a model's training checkpoints into a DuckDB warehouse with Ray actors pinned to GPUs.

Run it three ways:
    python jobs/sweep_checkpoints.py [...]                                  # starts a local Ray
    ray job submit --working-dir . -- python jobs/sweep_checkpoints.py ...  # a running Ray cluster
    ray submit jobs/cluster.yaml jobs/sweep_checkpoints.py ...              # launch a GPU cluster
With no arguments it runs the embedded default: train the toy suite if it is not cached, sweep all its
models and checkpoints, write the warehouse and the HTML report, and print where they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import logging
import os
import shlex
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from jobs.sweep_plan import ModelTarget, WorkItem, work_items
from jobs.sweep_targets import build_targets, default_home

log = logging.getLogger("sweep")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1]
    where = parser.add_argument_group("what to sweep (default: the embedded toy suite)")
    where.add_argument("--model", action="append", metavar="NAME",
                       help="Hugging Face model id, e.g. EleutherAI/pythia-160m-deduped (repeatable)")
    where.add_argument("--local", action="append", metavar="DIR",
                       help="a local run: a folder of step<N>/ checkpoints in save_pretrained layout (repeatable)")
    where.add_argument("--steps", default="all",
                       help="'all', a list '0,1,1000', or START:STOP[:STEP] over published steps (default: all)")
    where.add_argument("--toy-preset", default="default", help="toy suite preset for the default run (default: default)")
    what = parser.add_argument_group("how to score")
    what.add_argument("--tasks", metavar="DIR",
                      help="Todd-format task folder (abstractive/, extractive/): the reference's 29 FV tasks; "
                           "default: the built-in tasks")
    what.add_argument("--no-fv", action="store_true", help="skip the function-vector score (induction scores only)")
    what.add_argument("--induction-sequences", type=int, default=None, metavar="N",
                      help="sequences in the induction probe (default 1000)")
    what.add_argument("--fv-prompts", type=int, default=None, metavar="N",
                      help="clean and corrupted prompts per task for the FV score (default 100 each)")
    what.add_argument("--shots", type=int, default=None, metavar="N",
                      help="demonstrations per prompt for the FV score and few-shot accuracy (default 10)")
    what.add_argument("--no-icl", action="store_true",
                      help="skip the ICL experiments (few-shot accuracy; ablations and FV execution)")
    what.add_argument("--icl-queries", type=int, default=None, metavar="N",
                      help="few-shot accuracy queries per evaluation task (default 100)")
    what.add_argument("--ablation-steps", default=None, metavar="SPEC",
                      help="checkpoints that also get the head-ablation grid and FV execution: 'none', 'last', "
                           "or a step spec like --steps (default: none; the toy default: last and three earlier)")
    what.add_argument("--heldout", metavar="FILE",
                      help="text, JSONL or Parquet file (a 'text' field) for the ICL token-loss score")
    what.add_argument("--token-loss-positions", metavar="EARLY,LATE",
                      help="token positions of the ICL token-loss score (default 50,500 as the reference)")
    out = parser.add_argument_group("where results go")
    out.add_argument("--warehouse", type=Path, help="DuckDB file (default: $DYNAMICS_HOME/warehouse.duckdb)")
    out.add_argument("--report-dir", type=Path, help="HTML report folder (default: next to the warehouse)")
    out.add_argument("--no-report", action="store_true", help="do not render the HTML report at the end")
    run = parser.add_argument_group("resources")
    run.add_argument("--cache-dir", type=Path, help="Hugging Face cache for Hub checkpoints (default: HF's)")
    run.add_argument("--max-cache-gb", type=float, help="bound the checkpoint cache; scored revisions are evicted")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: one actor per GPU if the cluster has GPUs, else CPU actors")
    run.add_argument("--actors", type=int, help="number of scoring actors (default: GPUs, or CPUs on CPU)")
    run.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a new local Ray)")
    run.add_argument("--max-retries", type=int, default=2, help="retries of a checkpoint whose actor died")
    run.add_argument("--force", action="store_true", help="rescore checkpoints already in the warehouse")


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [
            f"checkpoints: {self.total} planned, {self.counts['ok']} scored, {self.skipped} skipped as already done, "
            f"{self.counts['duplicate']} duplicates, {self.counts['failed']} failed"
        ]
        lines += [f"  failed: {reason}" for reason in self.failures]
        return lines


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    home = default_home()
    warehouse_path = (args.warehouse or home / "warehouse.duckdb").expanduser().resolve()
    report_dir = (args.report_dir or warehouse_path.parent / f"{warehouse_path.stem}-report").resolve()
    targets = build_targets(args)  # validates every input before anything starts
    if args.warehouse is None:  # the default location is ours to create; a named one must exist
        warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    from warehouse import writes
    from warehouse.db import connect_write

    with connect_write(warehouse_path):  # fail early on an unusable warehouse path
        pass
    summary = Summary()
    todo: list[WorkItem] = []
    for target in targets:
        done = set() if args.force else writes.completed_checkpoints(warehouse_path, target.model_id, target.settings_hash)
        items = work_items(target)
        summary.total += len(items)
        todo += [item for item in items if item.step not in done]
        summary.skipped += sum(item.step in done for item in items)
    if todo:
        from dynamics.provenance import code_version

        run_id = writes.start_run(
            warehouse_path, config=_config_record(args, targets), code_version=code_version(),
            host=socket.gethostname(), command=shlex.join(sys.argv),
        )
        from jobs.sweep_driver import sweep

        sweep(todo, targets, warehouse_path, run_id, args, summary)
        writes.finish_run(warehouse_path, run_id)
    for line in summary.lines():
        print(line)
    print(f"warehouse: {warehouse_path}")
    if not args.no_report:
        from reports.report import render_report

        index = render_report(warehouse_path, report_dir, overwrite=True)
        print(f"report:    {index}")
    print(f"elapsed:   {time.perf_counter() - started:.0f} s")
    return 1 if summary.counts["failed"] else 0


def _config_record(args: argparse.Namespace, targets: list[ModelTarget]) -> dict:
    return {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"},
        "targets": [
            {"model": t.model_id, "source": t.source, "location": t.location, "steps": list(t.steps),
             "settings": t.settings(), "settings_hash": t.settings_hash}
            for t in targets
        ],
    }


def main(argv: list[str] | None = None) -> int:
    from jobs.cli import COMMANDS, run_command

    parser = argparse.ArgumentParser(prog="sweep_checkpoints.py", description=COMMANDS["sweep"][1])
    add_arguments(parser)
    return run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("DYNAMICS_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
