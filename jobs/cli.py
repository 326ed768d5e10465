"""The `dynamics` command: one subcommand per module in `jobs/`, each with `add_arguments` and `run`.

Bad input surfaces as a one-line `error: …` on stderr and exit status 2; nothing is printed on success
that a script would have to strip.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def run_command(run, args: argparse.Namespace) -> int:
    """Run a subcommand, turning user errors into one line on stderr and exit status 2."""
    try:
        return int(run(args) or 0)
    except UserError as err:  # the project's own: bad input or environment; anything else is a bug and shows its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
