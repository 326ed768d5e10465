"""`dynamics export`: write warehouse tables, views or a query result to Parquet or CSV files.

`dynamics sql` cannot write files (its connection reaches nothing but the warehouse); this command is the
way out. It reads through the same read-only connection (`warehouse.queries.query`), holding the file only
while DuckDB computes the rows, so a running sweep is not held up by a slow disk; then it writes each file
under a temporary name and renames it into place, so a file at --out is always complete.

    dynamics export --warehouse W --out scores.parquet head_scores
    dynamics export --warehouse W --format csv --out exports/ head_scores checkpoints
    dynamics export --warehouse W --out fv.parquet --query "SELECT * FROM induction_to_fv_transitions(z := 2)"
"""

from __future__ import annotations

import argparse
import errno
import os
import tempfile
from pathlib import Path

import polars as pl

from dynamics.errors import (
    AccessError,
    ExistingOutputError,
    InputError,
    MissingInputError,
    NotAFolderError,
    StorageError,
    UnknownNameError,
)
from jobs.sql import flatten_nested
from warehouse.db import require_warehouse
from warehouse.queries import query

FORMATS = ("parquet", "csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 2)[2]
    parser.add_argument("names", nargs="*", metavar="NAME", help="tables or views to export (e.g. head_scores)")
    parser.add_argument("--query", metavar="SQL", help="export the result of one read-only statement instead")
    parser.add_argument("--warehouse", required=True, type=Path, help="the warehouse .duckdb file")
    parser.add_argument("--out", required=True, type=Path,
                        help="file to write (one NAME or --query; an existing folder gets NAME.FORMAT), or a folder "
                             "for several NAMEs (created if missing)")
    parser.add_argument("--format", choices=FORMATS, default="parquet", help="file format (default parquet)")
    parser.add_argument("--overwrite", action="store_true", help="replace files already at the output paths")


def run(args: argparse.Namespace) -> int:
    if bool(args.names) == bool(args.query):
        raise InputError("name the tables or views to export (e.g. head_scores checkpoints) or pass --query SQL, "
                         "not both")
    require_warehouse(args.warehouse)
    sources = {"query": args.query} if args.query else _named_sources(args.warehouse, args.names)
    paths = {name: _output_path(args.out, name, args.format, several=len(sources) > 1) for name in sources}
    in_the_way = [str(path) for path in paths.values() if path.exists()]
    if in_the_way and not args.overwrite:  # all checked before any is written: an export is whole or not begun
        one = len(in_the_way) == 1
        raise ExistingOutputError(f"{', '.join(in_the_way)} already exist{'s' if one else ''}; pass --overwrite to "
                                  f"replace {'it' if one else 'them'} or choose another --out")
    for name, sql in sources.items():
        write_frame(query(args.warehouse, sql), paths[name], args.format)
        print(paths[name])
    return 0


def _named_sources(warehouse: Path, names: list[str]) -> dict[str, str]:
    """NAME → its SELECT, for tables and views the warehouse has (names checked against its catalogue)."""
    known = query(warehouse, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                             "ORDER BY table_name")["table_name"].to_list()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UnknownNameError(f"no table or view {', '.join(map(repr, unknown))} in {warehouse}; it has "
                               f"{', '.join(known)}")
    return {name: f'SELECT * FROM "{name}"' for name in dict.fromkeys(names)}


def _output_path(out: Path, name: str, fmt: str, several: bool) -> Path:
    """The file to write for `name`: --out itself, or NAME.FORMAT inside the folder --out."""
    if several or out.is_dir():
        if out.exists() and not out.is_dir():
            raise NotAFolderError(f"--out {out} is a file, but several NAMEs need a folder; pass a folder path")
        if not out.parent.is_dir():
            raise MissingInputError(f"the folder {out.parent} of --out does not exist; create it first")
        _make_folder(out)
        return out / f"{name}.{fmt}"
    if not out.parent.is_dir():
        raise MissingInputError(f"the folder {out.parent} of --out {out} does not exist; create it first")
    return out


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        raise _write_error(folder, err) from err


def write_frame(frame: pl.DataFrame, path: Path, fmt: str) -> None:
    """Write `frame` to `path` as Parquet or CSV (nested columns as JSON text), atomically."""
    try:
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(path.parent, err) from err
    os.close(handle)
    try:
        if fmt == "csv":
            flatten_nested(frame).write_csv(tmp_name)
        else:
            frame.write_parquet(tmp_name)
        os.replace(tmp_name, path)
    except OSError as err:
        raise _write_error(path, err) from err
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _write_error(path: Path, err: OSError) -> Exception:
    if err.errno == errno.ENOSPC:
        return StorageError(errno.ENOSPC, f"could not write {path}: the disk is full; free space or choose another --out")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return AccessError(f"cannot write {path} ({err.strerror}); make the folder writable or choose another --out")
    return StorageError(err.errno, f"could not write {path} ({err.strerror}); choose another --out")
