"""The `dynamics` command: one subcommand per module in `jobs/`, each with `add_arguments` and `run`.

Bad input surfaces as a one-line `error: …` on stderr and exit status 2; nothing is printed on success
that a script would have to strip. Ctrl-C and SIGTERM (what `timeout`, Slurm and Kubernetes send) both end
a command as an interruption: `interrupted` on stderr, exit status 130 or 143 (128 + the signal).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from dynamics.errors import UserError

# subcommand -> (module defining add_arguments(parser) and run(args) -> int, one-line help).
# Only the chosen subcommand's module is imported, so `dynamics --help` and `dynamics sql` start fast.
COMMANDS = {
    "models": ("jobs.models", "List the Pythia models the service knows, with their shapes and checkpoint counts."),
    "toy": ("jobs.toy", "Train (or reuse from the cache) a suite of small GPT-NeoX models with Pythia-like checkpoints."),
    "score": ("jobs.score", "Score every head of one checkpoint (induction, previous-token, duplicate-token, copying, "
              "FV) and print a per-layer summary."),
    "sweep": ("jobs.sweep_checkpoints",
              "Score every checkpoint of one or more models into a DuckDB warehouse (Ray actors, resumable)."),
    "sql": ("jobs.sql", "Query a warehouse with SQL (tables, views such as head_trajectories); no SQL opens a shell."),
    "export": ("jobs.export", "Write warehouse tables, views or a query result to Parquet or CSV files."),
    "report": ("jobs.report", "Render the HTML report of a warehouse: phase change, head maps, trajectories, "
               "ablations (works offline)."),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of `command` only."""
    parser = argparse.ArgumentParser(
        prog="dynamics",
        description="Score every attention head of every training checkpoint for induction and "
        "function-vector strength, store the scores in DuckDB, and report on them.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return run_command(args.run, args)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, like Ctrl-C's KeyboardInterrupt, so the same cleanup runs."""


def run_command(run, args: argparse.Namespace) -> int:
    """Run a subcommand, turning user errors into one line on stderr and exit status 2."""
    terminated = []

    def on_sigterm(signum: int, frame) -> None:
        terminated.append(signum)  # Ray's blocking calls turn any exception a handler raises into a KeyboardInterrupt
        raise Terminated(signal.Signals(signum).name)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        return int(run(args) or 0)
    except UserError as err:  # the project's own: bad input or environment; anything else is a bug and shows its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if previous is not None:  # a caller's own handler (a test runner, a notebook) comes back
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
