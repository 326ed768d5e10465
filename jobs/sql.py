"""`dynamics sql`: run SQL against a warehouse and print the result, or open an interactive SQL shell.

Every statement opens the warehouse read-only and closes it again, so a shell left open never blocks
a running sweep (docs/warehouse.md, "Concurrency: one writer or many readers, never both"). The connection
reaches no other file (no ATTACH, COPY, EXPORT, read_csv; `warehouse.db.READ_ONLY_CONFIG`); `dynamics export`
writes tables and results to files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

import polars as pl

from dynamics.errors import UserError
from warehouse.db import require_warehouse
from warehouse.queries import query

_SHELL_HELP = """Statements end with ';'. Helpers: .tables  .schema [NAME]  .help  .quit
Analyses: head_trajectories, head_set_membership, induction_to_fv_transitions, head_dimensionality,
head_dimensionality_correlations, phase_change, final_steps; each view is also a macro taking
top_fraction, e.g. SELECT * FROM induction_to_fv_transitions(top_fraction := 0.05);"""
_PROMPT, _CONTINUE = "dynamics> ", "     ...> "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", nargs="?", help="one SQL statement, read-only (files other than the warehouse are out of "
                        "reach: `dynamics export` writes them); omit it for an interactive shell")
    parser.add_argument("--warehouse", required=True, type=Path, help="the warehouse .duckdb file")
    parser.add_argument("--format", choices=("table", "csv"), default="table",
                        help="aligned text table (default) or CSV with a header")


def run(args: argparse.Namespace) -> int:
    require_warehouse(args.warehouse)
    if args.sql is not None:
        print(render(query(args.warehouse, args.sql), args.format), end="")
        return 0
    return run_shell(args.warehouse, args.format, sys.stdin, sys.stdout)


def render(frame: pl.DataFrame, fmt: str) -> str:
    """The frame as CSV with a header, or as a text table with aligned columns and a row count."""
    frame = flatten_nested(frame)
    if fmt == "csv":
        return frame.write_csv()
    return format_table(frame)


def format_table(frame: pl.DataFrame) -> str:
    """Columns padded to their widest cell (numbers right-aligned), NULL for missing values."""
    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    cells = [[_cell(value) for value in row] for row in frame.iter_rows()]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(frame.columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    lines = [line(frame.columns), "  ".join("-" * w for w in widths)] + [line(row) for row in cells]
    count = f"({frame.height} row{'s' if frame.height != 1 else ''})"
    return "\n".join(lines + [count]) + "\n"


def run_shell(path: Path, fmt: str, stdin: TextIO, stdout: TextIO) -> int:
    """Read statements ending in ';', print each result; an error is printed and the shell goes on."""
    interactive = stdin.isatty()
    if interactive:
        print(f"{path}\n{_SHELL_HELP}", file=stdout)
    buffer: list[str] = []
    while True:
        if interactive:
            print(_CONTINUE if buffer else _PROMPT, end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            return 0
        if not buffer and line.strip().startswith("."):
            if _run_dot_command(path, line.split(), fmt, stdout):
                return 0
            continue
        buffer.append(line)
        statement = "".join(buffer).strip()
        if statement.endswith(";"):
            buffer.clear()
            _print_result(path, statement, fmt, stdout)


def _run_dot_command(path: Path, words: list[str], fmt: str, stdout: TextIO) -> bool:
    """Run a '.' helper; True when it asks to quit."""
    command, names = words[0], words[1:]
    if command in (".quit", ".exit"):
        return True
    if command == ".tables":
        _print_result(path, "SELECT table_name AS name, lower(table_type) AS kind FROM information_schema.tables "
                            "WHERE table_schema = 'main' ORDER BY kind, name", fmt, stdout)
    elif command == ".schema":
        where = " AND table_name = ?" if names else ""
        _print_result(path, "SELECT table_name AS \"table\", column_name AS \"column\", data_type AS type "
                            "FROM information_schema.columns WHERE table_schema = 'main'" + where
                            + " ORDER BY table_name, ordinal_position", fmt, stdout, names[:1])
    elif command == ".help":
        print(_SHELL_HELP, file=stdout)
    else:
        print(f"error: unknown helper {command}; try .help", file=stdout)
    return False


def _print_result(path: Path, sql: str, fmt: str, stdout: TextIO, params: list | None = None) -> None:
    try:
        text = render(query(path, sql, params), fmt)
    except UserError as err:  # the shell goes on after a bad query; a bug still shows its traceback
        text = f"error: {err}\n"
    print(text, end="", file=stdout, flush=True)


def flatten_nested(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested columns (lists, structs) as JSON text, so CSV can hold them and tables can print them."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    return frame.with_columns(
        pl.Series(name, [None if v is None else json.dumps(v, default=str) for v in frame[name].to_list()], pl.Utf8)
        for name in nested
    )


def _cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
