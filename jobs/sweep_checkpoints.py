#!/usr/bin/env python
"""Sweep a model's training checkpoints into a DuckDB warehouse with Ray actors pinned to GPUs.

Run it three ways:
    python jobs/sweep_checkpoints.py [...]                                  # starts a local Ray
    ray job submit --working-dir . -- python jobs/sweep_checkpoints.py ...  # a running Ray cluster
    ray submit jobs/cluster.yaml jobs/sweep_checkpoints.py ...              # launch a GPU cluster
With no arguments it runs the embedded default: train the toy suite if it is not cached, sweep all its
models and checkpoints, write the warehouse and the HTML report, and print where they are.
`--rerun RUN_ID` repeats a stored run with exactly the config it was started with.
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

from jobs.sweep import config as sweep_config
from jobs.sweep.config import SweepConfig, default_warehouse
from jobs.sweep.targets import ModelTarget, build_targets

log = logging.getLogger("sweep")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n", 1)[1]
    sweep_config.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_sweep(SweepConfig.from_args(args))


def run_sweep(config: SweepConfig) -> int:
    """Plan, score and write every checkpoint `config` names, then render the report; the exit status."""
    started = time.perf_counter()
    warehouse_path = Path(config.warehouse) if config.warehouse else default_warehouse()
    report_dir = Path(config.report_dir) if config.report_dir else warehouse_path.parent / f"{warehouse_path.stem}-report"
    targets = build_targets(config)  # validates every input before anything starts
    if config.warehouse is None:  # the default location is ours to create; a named one must exist
        warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    from jobs.sweep.plan import plan_work
    from jobs.sweep.writer import Summary
    from warehouse import writes
    from warehouse.db import connect_write

    with connect_write(warehouse_path):  # fail early on an unusable warehouse path
        pass
    todo, skipped = plan_work(targets, warehouse_path, config.force)
    summary = Summary(total=len(todo) + skipped, skipped=skipped)
    if todo:
        from dynamics.provenance import code_version
        from jobs.sweep.driver import sweep

        run_id = writes.start_run(
            warehouse_path, config=run_record(config, targets), code_version=code_version(),
            host=socket.gethostname(), command=shlex.join(sys.argv),
        )
        sweep(todo, targets, warehouse_path, run_id, config, summary)
        writes.finish_run(warehouse_path, run_id)
    for line in summary.lines():
        print(line)
    print(f"warehouse: {warehouse_path}")
    if config.report:
        from reports.report import render_report

        index = render_report(warehouse_path, report_dir, overwrite=True)
        print(f"report:    {index}")
    print(f"elapsed:   {time.perf_counter() - started:.0f} s")
    return 1 if summary.counts["failed"] else 0


def run_record(config: SweepConfig, targets: list[ModelTarget]) -> dict:
    """What `runs.config` stores: the whole config (to rerun it) and each target's settings (provenance)."""
    return {
        "sweep": config.to_dict(),
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
