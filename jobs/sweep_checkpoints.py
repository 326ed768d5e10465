#!/usr/bin/env python
"""Sweep a model's training checkpoints into a DuckDB warehouse with Ray actors pinned to GPUs.

Run it three ways:
    python jobs/sweep_checkpoints.py [...]                                  # starts a local Ray
    ray job submit --working-dir . -- python jobs/sweep_checkpoints.py ...  # a running Ray cluster
    ray submit jobs/cluster.yaml jobs/sweep_checkpoints.py ...              # launch a GPU cluster
With no arguments it runs the embedded default: train the toy suite if it is not cached, sweep all its
models and checkpoints, write the warehouse and the HTML report, and print where they are.
`--rerun RUN_ID` repeats a stored run with exactly the config it was started with. A run that ends badly
is marked in the warehouse: 'failed' with the error, or 'interrupted' (Ctrl-C, SIGTERM).
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jobs.sweep import config as sweep_config
from jobs.sweep.config import SweepConfig, default_warehouse
from jobs.sweep.plan import Plan
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
    from jobs.sweep.plan import check_local_ids, plan_work
    from jobs.sweep.writer import Summary
    from warehouse import writes
    from warehouse.db import check_write_target, connect_write

    if config.warehouse is None:  # the default location is ours to create; a named one must exist
        warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    # a missing folder or a damaged file (cut short) is refused before the toy suite trains or the Hub is listed
    check_write_target(warehouse_path)
    targets = build_targets(config)  # validates every input before anything starts
    with connect_write(warehouse_path):  # fail early on an unusable warehouse path (permissions)
        pass
    check_local_ids(targets, warehouse_path, named=tuple(f"local/{name}" for name in config.names))
    plan = plan_work(targets, warehouse_path, config.force)
    summary = Summary(total=len(plan.todo) + plan.skipped, skipped=plan.skipped)
    if plan.todo:
        from dynamics.provenance import code_version
        from jobs.sweep.driver import sweep

        run_id = writes.start_run(
            warehouse_path, config=run_record(config, targets), code_version=code_version(),
            host=socket.gethostname(), command=shlex.join(sys.argv),
        )
        with recorded_ending(warehouse_path, run_id, summary.lines):
            sweep(plan.todo, targets, warehouse_path, run_id, config, summary)
    for line in summary.lines() + target_lines(targets, plan):
        print(line)
    print(f"warehouse: {warehouse_path}")
    if config.report:
        from reports.report import render_report

        index = render_report(warehouse_path, report_dir, overwrite=True)
        print(f"report:    {index}")
    print(f"elapsed:   {time.perf_counter() - started:.0f} s")
    return 1 if summary.counts["failed"] else 0


@contextmanager
def recorded_ending(warehouse: Path, run_id: str, progress: Callable[[], list[str]]) -> Iterator[None]:
    """Mark the run 'finished', 'interrupted' (printing `progress()`, what was done) or 'failed' with the error,
    however the block ends; the exception goes on up."""
    from dynamics.errors import first_line
    from warehouse.writes import finish_run

    def end(status: str, error: str | None = None) -> None:
        try:
            finish_run(warehouse, run_id, status, error)
        except Exception as err:  # e.g. the full disk that ended the run: keep its own error in front
            log.warning("could not mark run %s as %s in %s: %s", run_id, status, warehouse, err)

    try:
        yield
    except KeyboardInterrupt as interrupt:
        # Ray's blocking calls re-raise SIGTERM's Terminated as a bare KeyboardInterrupt
        end("interrupted", f"interrupted by {interrupt}" if str(interrupt) else "interrupted (Ctrl-C or SIGTERM)")
        for line in progress():
            print(line)
        raise
    except Exception as err:
        end("failed", f"{type(err).__name__}: {first_line(err)}")
        raise
    end("finished")


def target_lines(targets: list[ModelTarget], plan: Plan) -> list[str]:
    """Each local run's id and folder, and what was left out or rescored, for the console."""
    changed: dict[str, list[str]] = {}
    for item in plan.changed:
        changed.setdefault(item.model_id, []).append(item.revision)
    lines = []
    for t in targets:
        notes = []
        if t.model_id in changed:
            notes.append(f"rescored {len(changed[t.model_id])} checkpoint(s) whose weight files changed since they "
                         f"were scored: {', '.join(changed[t.model_id])}")
        for kind, names in (("FV", t.left_out_tasks), ("few-shot evaluation", t.left_out_evaluation_tasks)):
            if names:
                notes.append(f"left out {len(names)} {kind} task(s) whose prompts exceed the {t.context_tokens}-token "
                             f"context: {', '.join(names)}")
        if t.skipped_folders:
            notes.append(f"left out {len(t.skipped_folders)} folder(s) whose names give no single step "
                         f"(--skip-unparsed): {', '.join(t.skipped_folders)}")
        if t.source == "local" or notes:
            lines += [f"{t.model_id}: {t.location}"] + [f"  {note}" for note in notes]
    return lines


def run_record(config: SweepConfig, targets: list[ModelTarget]) -> dict:
    """What `runs.config` stores: the whole config (to rerun it) and each target's settings (provenance)."""
    return {
        "sweep": config.to_dict(),
        "targets": [
            {"model": t.model_id, "source": t.source, "location": t.location, "steps": list(t.steps),
             "revisions": list(t.revisions), "suite": t.suite, "seed": t.seed, "skipped_folders": list(t.skipped_folders),
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
